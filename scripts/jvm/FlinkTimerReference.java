// Flink's own heap timers (the priority queue HeapKeyedStateBackend creates for timers, as
// InternalTimeServiceManagerImpl asks for it: a HeapPriorityQueueSet per key group under a
// KeyGroupPartitionedPriorityQueue, of TimerHeapInternalTimer) on the shapes of
// backend/benches/timers.rs, timed on this machine's JVM. Register, delete and fire do what
// InternalTimerServiceImpl does: add/remove a TimerHeapInternalTimer of the current key;
// fire = peek, set the timer's key current, poll.
//
// One operation per JVM; 5 warm-up invocations, then BENCH_ROUNDS (5) invocations on a fresh
// backend each (setup untimed), median printed as "<name> <ops/ms>".
//
//   javac -cp flink-dist-2.3.0.jar -d /tmp/flinkref scripts/jvm/StateOpsReference.java \
//       scripts/jvm/FlinkHeapReference.java scripts/jvm/FlinkTimerReference.java
//   java -Xms6g -Xmx6g -cp /tmp/flinkref:flink-dist-2.3.0.jar FlinkTimerReference timerFire

import java.util.Arrays;

import org.apache.flink.api.common.typeutils.base.LongSerializer;
import org.apache.flink.runtime.state.KeyGroupedInternalPriorityQueue;
import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.runtime.state.VoidNamespaceSerializer;
import org.apache.flink.runtime.state.heap.HeapKeyedStateBackend;
import org.apache.flink.streaming.api.operators.TimerHeapInternalTimer;
import org.apache.flink.streaming.api.operators.TimerSerializer;

public final class FlinkTimerReference {
    static long sink;

    /** splitmix64, as backend/benches/timers.rs. */
    static long mix(long i) {
        long z = i + 0x9E3779B97F4A7C15L;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    static long key(long i, long timers) {
        return i % Math.max(timers / 10, 1);
    }

    static long ts(long i) {
        return Long.remainderUnsigned(mix(i), 1_000_000L);
    }

    static HeapKeyedStateBackend<Long> backend;
    static KeyGroupedInternalPriorityQueue<TimerHeapInternalTimer<Long, VoidNamespace>> queue;

    static void fresh() throws Exception {
        if (backend != null) {
            backend.dispose();
        }
        backend = FlinkHeapReference.backend(StateOpsReference.MAX_PARALLELISM);
        queue =
                backend.create(
                        "_timer_state/event_bench",
                        new TimerSerializer<>(
                                LongSerializer.INSTANCE, VoidNamespaceSerializer.INSTANCE));
    }

    static void registerAll(long n) {
        for (long i = 0; i < n; i++) {
            Long k = key(i, n);
            backend.setCurrentKey(k);
            queue.add(new TimerHeapInternalTimer<>(ts(i), k, VoidNamespace.INSTANCE));
        }
    }

    static long fire(long upTo) {
        long fired = 0;
        TimerHeapInternalTimer<Long, VoidNamespace> t;
        while ((t = queue.peek()) != null && t.getTimestamp() <= upTo) {
            backend.setCurrentKey(t.getKey());
            queue.poll();
            sink += t.getKey();
            fired++;
        }
        return fired;
    }

    /** One invocation: ops per ms. */
    static double invoke(String name, long n) throws Exception {
        fresh();
        long start;
        long ops;
        switch (name) {
            case "timerRegister":
                start = System.nanoTime();
                registerAll(n);
                ops = n;
                break;
            case "timerDelete":
                registerAll(n);
                start = System.nanoTime();
                for (long i = 0; i < n; i++) {
                    long j = (i * 7) % n;
                    Long k = key(j, n);
                    backend.setCurrentKey(k);
                    queue.remove(new TimerHeapInternalTimer<>(ts(j), k, VoidNamespace.INSTANCE));
                }
                if (!queue.isEmpty()) {
                    throw new IllegalStateException("timers left");
                }
                ops = n;
                break;
            case "timerFire":
                registerAll(n);
                start = System.nanoTime();
                ops = fire(Long.MAX_VALUE);
                break;
            case "fireProcessingTimers":
                {
                    final long perInvocation = 150_000;
                    long now = 1_700_000_000_000L;
                    start = System.nanoTime();
                    Long k = 42L;
                    backend.setCurrentKey(k);
                    for (long i = 0; i < perInvocation; i++) {
                        queue.add(
                                new TimerHeapInternalTimer<>(
                                        now - perInvocation + i, k, VoidNamespace.INSTANCE));
                    }
                    ops = fire(now);
                    if (ops != perInvocation) {
                        throw new IllegalStateException("fired " + ops);
                    }
                    break;
                }
            default:
                throw new IllegalArgumentException(name);
        }
        return ops / ((System.nanoTime() - start) / 1e6);
    }

    public static void main(String[] args) throws Exception {
        String name = args[0];
        long n = Long.parseLong(System.getenv().getOrDefault("TIMERS", "200000"));
        int rounds = Integer.parseInt(System.getenv().getOrDefault("BENCH_ROUNDS", "5"));
        for (int w = 0; w < 5; w++) {
            invoke(name, n);
        }
        double[] r = new double[rounds];
        for (int i = 0; i < rounds; i++) {
            r[i] = invoke(name, n);
        }
        Arrays.sort(r);
        System.out.printf("%s %.0f%n", name, r[rounds / 2]);
    }
}
