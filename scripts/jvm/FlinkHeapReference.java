// Flink's own heap state backend (HeapKeyedStateBackend from flink-dist, as HashMapStateBackend
// creates it) on the operations, keys, values and access order of backend/benches/state_ops.rs,
// timed on this machine's JVM. Unlike StateOpsReference (JDK collections in Flink's layout), this
// is Flink's code: CopyOnWriteStateMap per key group, state descriptors, serializer checks,
// namespaces, key-group computation per setCurrentKey.
//
// The backend is built as flink-benchmarks' BackendUtils.createHeapKeyedStateBackend builds it:
// Long keys, no latency or size tracking, synchronous snapshots, key groups 0..KEY_GROUPS-1 of
// as many (default 128, as the Rust bench and StateOpsReference; flink-benchmarks uses 2).
// Inputs and timing are StateOpsReference's: one operation per JVM, 5 warm-up rounds, then
// BENCH_ROUNDS (3) rounds of BENCH_MS (1000) ms, median printed as "<name> <ops/ms>".
//
//   javac -cp flink-dist-2.3.0.jar -d /tmp/flinkref scripts/jvm/StateOpsReference.java \
//       scripts/jvm/FlinkHeapReference.java
//   java -Xms6g -Xmx6g -cp /tmp/flinkref:flink-dist-2.3.0.jar FlinkHeapReference mapAdd

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Iterator;
import java.util.List;
import java.util.Map;

import org.apache.flink.api.common.ExecutionConfig;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeutils.base.DoubleSerializer;
import org.apache.flink.api.common.typeutils.base.LongSerializer;
import org.apache.flink.core.fs.CloseableRegistry;
import org.apache.flink.runtime.state.AbstractStateBackend;
import org.apache.flink.runtime.state.KeyGroupRange;
import org.apache.flink.runtime.state.LocalRecoveryConfig;
import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.runtime.state.VoidNamespaceSerializer;
import org.apache.flink.runtime.state.heap.HeapKeyedStateBackend;
import org.apache.flink.runtime.state.heap.HeapKeyedStateBackendBuilder;
import org.apache.flink.runtime.state.heap.HeapPriorityQueueSetFactory;
import org.apache.flink.runtime.state.metrics.LatencyTrackingStateConfig;
import org.apache.flink.runtime.state.metrics.SizeTrackingStateConfig;
import org.apache.flink.runtime.state.ttl.TtlTimeProvider;

public final class FlinkHeapReference {
    interface ThrowingOp {
        void apply(long i) throws Exception;
    }

    static StateOpsReference.Op unchecked(ThrowingOp op) {
        return i -> {
            try {
                op.apply(i);
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        };
    }

    static HeapKeyedStateBackend<Long> backend(int keyGroups) throws Exception {
        KeyGroupRange range = new KeyGroupRange(0, keyGroups - 1);
        ExecutionConfig config = new ExecutionConfig();
        return new HeapKeyedStateBackendBuilder<>(
                        null,
                        LongSerializer.INSTANCE,
                        FlinkHeapReference.class.getClassLoader(),
                        keyGroups,
                        range,
                        config,
                        TtlTimeProvider.DEFAULT,
                        LatencyTrackingStateConfig.disabled(),
                        SizeTrackingStateConfig.disabled(),
                        Collections.emptyList(),
                        AbstractStateBackend.getCompressionDecorator(config),
                        LocalRecoveryConfig.BACKUP_AND_RECOVERY_DISABLED,
                        new HeapPriorityQueueSetFactory(range, keyGroups, 128),
                        false,
                        new CloseableRegistry())
                .build();
    }

    static long sink;

    public static void main(String[] args) throws Exception {
        String name = args[0];
        long budgetMs = Long.parseLong(System.getenv().getOrDefault("BENCH_MS", "1000"));
        int rounds = Integer.parseInt(System.getenv().getOrDefault("BENCH_ROUNDS", "3"));
        int keyGroups = StateOpsReference.MAX_PARALLELISM;
        Long[] sorted = StateOpsReference.prepareInputs();
        HeapKeyedStateBackend<Long> b = backend(keyGroups);
        Runnable none = () -> {};
        double ops;
        int perCall = 1;
        if (name.startsWith("value")) {
            ValueState<Long> v =
                    b.getPartitionedState(
                            VoidNamespace.INSTANCE,
                            VoidNamespaceSerializer.INSTANCE,
                            new ValueStateDescriptor<>("v", LongSerializer.INSTANCE));
            for (Long k : sorted) {
                b.setCurrentKey(k);
                v.update(StateOpsReference.value(k));
            }
            ThrowingOp op;
            switch (name) {
                case "valueGet":
                    op = i -> {
                        b.setCurrentKey(StateOpsReference.setupKey(i));
                        sink += v.value() == null ? 0 : 1;
                    };
                    break;
                case "valueUpdate":
                    op = i -> {
                        b.setCurrentKey(StateOpsReference.setupKey(i));
                        v.update(StateOpsReference.value(i));
                    };
                    break;
                case "valueAdd":
                    op = i -> {
                        b.setCurrentKey(StateOpsReference.newKey(i));
                        v.update(StateOpsReference.value(i));
                    };
                    break;
                default:
                    throw new IllegalArgumentException(name);
            }
            ops = StateOpsReference.run(unchecked(op), none, budgetMs, rounds, perCall);
        } else if (name.equals("recordGet3")) {
            // Not a flink-benchmarks shape: one record reads three value states of its key.
            List<ValueState<Long>> states = new ArrayList<>();
            for (String n : new String[] {"a", "b", "c"}) {
                states.add(
                        b.getPartitionedState(
                                VoidNamespace.INSTANCE,
                                VoidNamespaceSerializer.INSTANCE,
                                new ValueStateDescriptor<>(n, LongSerializer.INSTANCE)));
            }
            for (Long k : sorted) {
                b.setCurrentKey(k);
                for (ValueState<Long> v : states) {
                    v.update(StateOpsReference.value(k));
                }
            }
            ThrowingOp op =
                    i -> {
                        b.setCurrentKey(StateOpsReference.setupKey(i));
                        for (ValueState<Long> v : states) {
                            sink += v.value() == null ? 0 : 1;
                        }
                    };
            ops = StateOpsReference.run(unchecked(op), none, budgetMs, rounds, perCall);
        } else if (name.startsWith("list")) {
            ListState<Long> l =
                    b.getPartitionedState(
                            VoidNamespace.INSTANCE,
                            VoidNamespaceSerializer.INSTANCE,
                            new ListStateDescriptor<>("l", LongSerializer.INSTANCE));
            // flink-benchmarks' per-iteration setup: every setup key holds exactly one element.
            Runnable oneEach =
                    () -> {
                        try {
                            for (Long k : sorted) {
                                b.setCurrentKey(k);
                                l.update(Collections.singletonList(StateOpsReference.value(k)));
                            }
                        } catch (Exception e) {
                            throw new RuntimeException(e);
                        }
                    };
            List<Long> single = new ArrayList<>();
            // update([v]) on key k: listUpdate and listAdd differ only in the key.
            java.util.function.BiConsumer<Long, Long> replace =
                    (k, v) -> {
                        try {
                            b.setCurrentKey(k);
                            single.clear();
                            single.add(v);
                            l.update(single);
                        } catch (Exception e) {
                            throw new RuntimeException(e);
                        }
                    };
            ThrowingOp op;
            switch (name) {
                case "listUpdate":
                    op = i -> replace.accept(StateOpsReference.setupKey(i), StateOpsReference.value(i));
                    break;
                case "listAdd":
                    op = i -> replace.accept(StateOpsReference.newKey(i), StateOpsReference.value(i));
                    break;
                case "listAppend":
                    op = i -> {
                        b.setCurrentKey(StateOpsReference.setupKey(i));
                        l.add(StateOpsReference.value(i));
                    };
                    break;
                case "listGet":
                    op = i -> {
                        b.setCurrentKey(StateOpsReference.setupKey(i));
                        sink += l.get() == null ? 0 : 1;
                    };
                    break;
                case "listAddAll":
                    List<Long> batch = Arrays.asList(StateOpsReference.listBatch());
                    op = i -> {
                        b.setCurrentKey(StateOpsReference.setupKey(i));
                        l.addAll(batch);
                    };
                    break;
                default:
                    throw new IllegalArgumentException(name);
            }
            ops = StateOpsReference.run(unchecked(op), oneEach, budgetMs, rounds, perCall);
        } else if (name.startsWith("map")) {
            MapState<Long, Double> m =
                    b.getPartitionedState(
                            VoidNamespace.INSTANCE,
                            VoidNamespaceSerializer.INSTANCE,
                            new MapStateDescriptor<>(
                                    "m", LongSerializer.INSTANCE, DoubleSerializer.INSTANCE));
            for (Long k : sorted) {
                b.setCurrentKey(k);
                for (int e = 0; e < StateOpsReference.MAP_ENTRIES; e++) {
                    m.put(StateOpsReference.mapKey(e), StateOpsReference.mapValue(k + e));
                }
            }
            ThrowingOp op;
            switch (name) {
                case "mapGet":
                    op = i -> {
                        b.setCurrentKey(StateOpsReference.setupKey(i));
                        sink += m.get(StateOpsReference.mapKey(i)) == null ? 0 : 1;
                    };
                    break;
                case "mapContains":
                    op = i -> {
                        b.setCurrentKey(StateOpsReference.setupKey(i));
                        sink += m.contains(StateOpsReference.mapKey(i) << 1) ? 1 : 0;
                    };
                    break;
                case "mapUpdate":
                    op = i -> {
                        b.setCurrentKey(StateOpsReference.setupKey(i));
                        m.put(StateOpsReference.mapKey(i), StateOpsReference.mapValue(i));
                    };
                    break;
                case "mapAdd":
                    op = i -> {
                        b.setCurrentKey(StateOpsReference.newKey(i));
                        m.put(StateOpsReference.mapKey(i), StateOpsReference.mapValue(i));
                    };
                    break;
                case "mapIterator":
                    perCall = StateOpsReference.MAP_ENTRIES;
                    op = i -> {
                        b.setCurrentKey(StateOpsReference.setupKey(i));
                        Iterator<Map.Entry<Long, Double>> it = m.iterator();
                        while (it.hasNext()) {
                            Map.Entry<Long, Double> e = it.next();
                            sink += (e.getKey() == null ? 0 : 1) + (e.getValue() == null ? 0 : 1);
                        }
                    };
                    break;
                default:
                    throw new IllegalArgumentException(name);
            }
            ops = StateOpsReference.run(unchecked(op), none, budgetMs, rounds, perCall);
        } else {
            throw new IllegalArgumentException(name);
        }
        System.out.printf("%s %.0f%n", name, ops);
        if (sink == 42) {
            System.err.println();
        }
        b.dispose();
    }
}
