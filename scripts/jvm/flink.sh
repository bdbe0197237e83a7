# Shared by the scripts that run Flink's own code as a same-machine reference (sourced, not run).
# Installs a JDK if there is none, fetches Flink's jars once (flink-dist and log4j from PyPI's
# apache-flink-libraries, cached under ~/.cache/statefs/flink) and sets $flink_version and
# $flink_cp (the classpath).

if ! command -v javac >/dev/null 2>&1; then
    echo "installing openjdk-17-jdk-headless for the JVM references" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless >/dev/null
fi
flink_version=2.3.0
flink_dir="${XDG_CACHE_HOME:-$HOME/.cache}/statefs/flink"
flink_lib="$flink_dir/pyflink/lib"
if [ ! -f "$flink_lib/flink-dist-$flink_version.jar" ]; then
    echo "fetching Flink $flink_version's jars (apache-flink-libraries, ~330 MB)" >&2
    mkdir -p "$flink_dir"
    python3 -m pip download --quiet --no-deps -d "$flink_dir" "apache-flink-libraries==$flink_version"
    # Only flink-dist and log4j are needed; the wheel holds ~1 GB of other jars.
    python3 - "$flink_dir" <<'PY'
import glob, re, sys, zipfile
d = sys.argv[1]
with zipfile.ZipFile(glob.glob(d + "/apache_flink_libraries-*.whl")[0]) as z:
    for n in z.namelist():
        if re.fullmatch(r"pyflink/lib/(flink-dist|log4j)-.*\.jar", n):
            z.extract(n, d)
PY
fi
flink_cp=$(find "$flink_lib" -name 'flink-dist-*.jar' -o -name 'log4j-*.jar' | tr '\n' ':')
