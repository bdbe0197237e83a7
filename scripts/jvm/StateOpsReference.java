// The JVM reference for backend/benches/state_ops.rs: the same operations, keys, values and access
// order on Flink's heap layout built from JDK collections, timed on this machine's JVM.
//
// What it is: roughly a lower bound on the time Flink's heap backend needs here; it is not Flink.
// Flink's heap backend keeps one hash map per key group (key group = murmur hash of the key's
// hashCode, mod max parallelism), Long keys and values as objects, a HashMap per map-state key and
// an ArrayList per list-state key. This does exactly that with java.util.HashMap and ArrayList, and nothing more: no namespaces, no
// copy-on-write versions, no TTL, no state-descriptor checks, no JMH per-invocation setup. Flink's
// heap backend does this work plus those (with its own hash map in place of java.util.HashMap), so
// it is unlikely to be faster than this here.
//
// One operation per JVM (as JMH forks), so every call site stays monomorphic. Each operation runs
// 5 warm-up rounds, then BENCH_ROUNDS (3) measured rounds of BENCH_MS (1000) ms; the median is
// printed as "<name> <ops/ms>".
//
//   javac -d /tmp/jvmref scripts/jvm/StateOpsReference.java
//   java -Xms6g -Xmx6g -cp /tmp/jvmref StateOpsReference mapGet

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

public final class StateOpsReference {
    static final int SETUP_KEYS = 500_000;
    static final int NEW_KEYS = 500_000;
    static final int MAP_ENTRIES = 10;
    static final int LIST_BATCH = 100;
    static final int RANDOM_VALUES = 1_000_000;
    // Key groups (KEY_GROUPS), as the Rust bench's BENCH_KEY_GROUPS (default 128, Flink's default).
    static final int MAX_PARALLELISM =
            Integer.parseInt(System.getenv().getOrDefault("KEY_GROUPS", "128"));

    // xorshift64*, seeded as the Rust bench, so both shuffle alike.
    static long rng;

    static long next() {
        rng ^= rng >>> 12;
        rng ^= rng << 25;
        rng ^= rng >>> 27;
        return rng * 0x2545F4914F6CDD1DL;
    }

    static Long[] shuffled(long from, long to) {
        long[] v = new long[(int) (to - from)];
        for (int i = 0; i < v.length; i++) {
            v[i] = from + i;
        }
        for (int i = v.length - 1; i > 0; i--) {
            int j = (int) Long.remainderUnsigned(next(), i + 1);
            long t = v[i];
            v[i] = v[j];
            v[j] = t;
        }
        Long[] boxed = new Long[v.length];
        for (int i = 0; i < v.length; i++) {
            boxed[i] = v[i];
        }
        return boxed;
    }

    // Flink's key-group assignment: murmur hash of hashCode, modulo max parallelism.
    static int bitMix(int in) {
        in ^= in >>> 16;
        in *= 0x85ebca6b;
        in ^= in >>> 13;
        in *= 0xc2b2ae35;
        in ^= in >>> 16;
        return in;
    }

    static int murmur(int code) {
        code *= 0xcc9e2d51;
        code = Integer.rotateLeft(code, 15);
        code *= 0x1b873593;
        code = Integer.rotateLeft(code, 13);
        code = code * 5 + 0xe6546b64;
        code ^= 4;
        code = bitMix(code);
        if (code >= 0) {
            return code;
        } else if (code != Integer.MIN_VALUE) {
            return -code;
        }
        return 0;
    }

    static int keyGroup(Long key) {
        return murmur(key.hashCode()) % MAX_PARALLELISM;
    }

    /** A state: one hash map per key group, as Flink's heap state table. */
    @SuppressWarnings("unchecked")
    static <V> HashMap<Long, V>[] table() {
        HashMap<Long, V>[] t = new HashMap[MAX_PARALLELISM];
        for (int i = 0; i < t.length; i++) {
            t[i] = new HashMap<>();
        }
        return t;
    }

    static Long[] setup;
    static Long[] fresh;
    static Long[] mapKeys;
    static Double[] mapValues;
    static Long[] values;
    static Long[] batch;
    static long index;
    // Results feed this so the JIT cannot drop the lookups; nothing is dereferenced for it.
    static long sink;

    static Long setupKey(long i) {
        return setup[(int) (i % SETUP_KEYS)];
    }

    static Long newKey(long i) {
        return fresh[(int) (i % NEW_KEYS)];
    }

    static Long mapKey(long i) {
        return mapKeys[(int) (i % MAP_ENTRIES)];
    }

    static Double mapValue(long i) {
        return mapValues[(int) (i % MAP_ENTRIES)];
    }

    static Long value(long i) {
        return values[(int) (i % RANDOM_VALUES)];
    }

    interface Op {
        void apply(long i);
    }

    static double run(Op op, Runnable reset, long budgetMs, int rounds, int perCall) {
        double[] results = new double[rounds];
        for (int r = -5; r < rounds; r++) {
            reset.run();
            long start = System.nanoTime();
            long end = start + budgetMs * 1_000_000L;
            long n = 0;
            long now;
            do {
                for (int k = 0; k < 1000; k++) {
                    op.apply(index++);
                }
                n += 1000;
                now = System.nanoTime();
            } while (now < end);
            if (r >= 0) {
                results[r] = (double) n * perCall / ((now - start) / 1e6);
            }
        }
        Arrays.sort(results);
        return results[rounds / 2];
    }

    /** Fills the inputs as the Rust bench does; returns the setup keys in ascending order. */
    static Long[] prepareInputs() {
        rng = 0x9e3779b97f4a7c15L;
        mapKeys = shuffled(0, MAP_ENTRIES);
        mapValues = new Double[MAP_ENTRIES];
        for (int i = 0; i < MAP_ENTRIES; i++) {
            mapValues[i] = (next() >>> 11) / (double) (1L << 53);
        }
        setup = shuffled(0, SETUP_KEYS);
        fresh = shuffled(SETUP_KEYS, SETUP_KEYS + NEW_KEYS);
        values = shuffled(0, RANDOM_VALUES);
        Long[] sorted = new Long[SETUP_KEYS];
        for (int i = 0; i < SETUP_KEYS; i++) {
            sorted[i] = (long) i;
        }
        return sorted;
    }

    /** The listAddAll batch: 100 random longs, seeded as the Rust bench. */
    static Long[] listBatch() {
        Long[] b = new Long[LIST_BATCH];
        rng = 42;
        for (int i = 0; i < LIST_BATCH; i++) {
            b[i] = next();
        }
        return b;
    }

    public static void main(String[] args) {
        String name = args[0];
        long budgetMs = Long.parseLong(System.getenv().getOrDefault("BENCH_MS", "1000"));
        int rounds = Integer.parseInt(System.getenv().getOrDefault("BENCH_ROUNDS", "3"));
        Long[] sorted = prepareInputs();
        Runnable none = () -> {};
        double ops;
        int perCall = 1;
        if (name.startsWith("value")) {
            HashMap<Long, Long>[] v = table();
            for (Long k : sorted) {
                v[keyGroup(k)].put(k, value(k));
            }
            Op op;
            switch (name) {
                case "valueGet":
                    op = i -> {
                        Long k = setupKey(i);
                        sink += v[keyGroup(k)].get(k) == null ? 0 : 1;
                    };
                    break;
                case "valueUpdate":
                    op = i -> {
                        Long k = setupKey(i);
                        v[keyGroup(k)].put(k, value(i));
                    };
                    break;
                case "valueAdd":
                    op = i -> {
                        Long k = newKey(i);
                        v[keyGroup(k)].put(k, value(i));
                    };
                    break;
                default:
                    throw new IllegalArgumentException(name);
            }
            ops = run(op, none, budgetMs, rounds, perCall);
        } else if (name.equals("recordGet3")) {
            // One record reads three value states of its key.
            List<HashMap<Long, Long>[]> states = new ArrayList<>();
            for (int s = 0; s < 3; s++) {
                HashMap<Long, Long>[] v = table();
                for (Long k : sorted) {
                    v[keyGroup(k)].put(k, value(k));
                }
                states.add(v);
            }
            Op op = i -> {
                Long k = setupKey(i);
                int g = keyGroup(k);
                for (HashMap<Long, Long>[] v : states) {
                    sink += v[g].get(k) == null ? 0 : 1;
                }
            };
            ops = run(op, none, budgetMs, rounds, perCall);
        } else if (name.startsWith("list")) {
            HashMap<Long, List<Long>>[] l = table();
            // Flink's per-iteration setup: every setup key holds exactly one element.
            Runnable oneEach = () -> {
                for (Long k : sorted) {
                    List<Long> one = new ArrayList<>();
                    one.add(value(k));
                    l[keyGroup(k)].put(k, one);
                }
            };
            List<Long> single = new ArrayList<>();
            // update([v]): Flink's heap list state replaces the key's list with a copy.
            java.util.function.BiConsumer<Long, Long> replace = (k, v) -> {
                single.clear();
                single.add(v);
                l[keyGroup(k)].put(k, new ArrayList<>(single));
            };
            Op op;
            switch (name) {
                case "listUpdate":
                    op = i -> replace.accept(setupKey(i), value(i));
                    break;
                case "listAdd":
                    op = i -> replace.accept(newKey(i), value(i));
                    break;
                case "listAppend":
                    op = i -> {
                        Long k = setupKey(i);
                        l[keyGroup(k)].get(k).add(value(i));
                    };
                    break;
                case "listGet":
                    op = i -> {
                        Long k = setupKey(i);
                        sink += l[keyGroup(k)].get(k) == null ? 0 : 1;
                    };
                    break;
                case "listAddAll":
                    batch = listBatch();
                    List<Long> batchList = Arrays.asList(batch);
                    op = i -> {
                        Long k = setupKey(i);
                        l[keyGroup(k)].get(k).addAll(batchList);
                    };
                    break;
                default:
                    throw new IllegalArgumentException(name);
            }
            ops = run(op, oneEach, budgetMs, rounds, perCall);
        } else if (name.startsWith("map")) {
            HashMap<Long, HashMap<Long, Double>>[] m = table();
            for (Long k : sorted) {
                HashMap<Long, Double> inner = new HashMap<>();
                for (int e = 0; e < MAP_ENTRIES; e++) {
                    inner.put(mapKey(e), mapValue(k + e));
                }
                m[keyGroup(k)].put(k, inner);
            }
            Op op;
            switch (name) {
                case "mapGet":
                    op = i -> {
                        Long k = setupKey(i);
                        sink += m[keyGroup(k)].get(k).get(mapKey(i)) == null ? 0 : 1;
                    };
                    break;
                case "mapContains":
                    op = i -> {
                        Long k = setupKey(i);
                        sink += m[keyGroup(k)].get(k).containsKey(mapKey(i) << 1) ? 1 : 0;
                    };
                    break;
                case "mapUpdate":
                    op = i -> {
                        Long k = setupKey(i);
                        m[keyGroup(k)].get(k).put(mapKey(i), mapValue(i));
                    };
                    break;
                case "mapAdd":
                    op = i -> {
                        Long k = newKey(i);
                        m[keyGroup(k)].computeIfAbsent(k, x -> new HashMap<>())
                                .put(mapKey(i), mapValue(i));
                    };
                    break;
                case "mapIterator":
                    perCall = MAP_ENTRIES;
                    op = i -> {
                        Long k = setupKey(i);
                        for (Map.Entry<Long, Double> e : m[keyGroup(k)].get(k).entrySet()) {
                            sink += (e.getKey() == null ? 0 : 1) + (e.getValue() == null ? 0 : 1);
                        }
                    };
                    break;
                default:
                    throw new IllegalArgumentException(name);
            }
            ops = run(op, none, budgetMs, rounds, perCall);
        } else {
            throw new IllegalArgumentException(name);
        }
        System.out.printf("%s %.0f%n", name, ops);
        if (sink == 42) {
            System.err.println();
        }
    }
}
