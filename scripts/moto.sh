# Sourced by the benchmark scripts that also run over the S3 test server.
# with_moto CMD...: runs CMD with S3_ENDPOINT and S3_BUCKET naming a moto server on a free loopback
# port (bucket `statefs-bench`), started for it and stopped after it, whatever way CMD ends.
with_moto() {
    local port moto status=0
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
    moto=$!
    trap "kill $moto 2>/dev/null; wait $moto 2>/dev/null || true" EXIT
    for _ in $(seq 100); do curl -sf -X PUT "http://127.0.0.1:$port/statefs-bench" >/dev/null && break; sleep 0.2; done
    S3_ENDPOINT="http://127.0.0.1:$port" S3_BUCKET=statefs-bench "$@" || status=$?
    kill "$moto" 2>/dev/null; wait "$moto" 2>/dev/null || true
    trap - EXIT
    return "$status"
}
