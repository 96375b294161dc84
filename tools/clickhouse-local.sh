#!/usr/bin/env bash
# Starts (or stops) a throw-away ClickHouse server on loopback for tests and the demo.
#   tools/clickhouse-local.sh start DIR [HTTP_PORT [TCP_PORT]]   -> prints the HTTP URL once the server answers
#     (the same URL at once when the server of DIR is already up)
#   tools/clickhouse-local.sh stop DIR [GRACE_SECONDS]   -> SIGTERM, then SIGKILL after GRACE (default 30)
#     seconds. Tests that simulate an outage pass a short grace: 18.16 waits ~11 s for a client
#     holding an unfinished INSERT open before it exits, and ~2 s when idle.
# Data, logs and config live under DIR, so nothing touches /var/lib/clickhouse.
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?DIR}; port=${3:-18123}
case $cmd in
start)
  mkdir -p "$dir"/{data,tmp,user_files,format_schemas,log}
  dir=$(cd "$dir" && pwd)
  tcp=${4:-$((port + 1))}
  # Already running from this folder: a second server would fail on the ports, and overwriting
  # server.pid would make `stop` miss the running one.
  if [ -f "$dir/server.pid" ] && grep -qa clickhouse "/proc/$(cat "$dir/server.pid")/cmdline" 2>/dev/null; then
    if curl -fsS "http://127.0.0.1:$port/?query=SELECT%201" >/dev/null 2>&1; then echo "http://127.0.0.1:$port"; exit 0; fi
    echo "a ClickHouse from $dir is running (pid $(cat "$dir/server.pid")) but does not answer on port $port; stop it first" >&2
    exit 1
  fi
  cat > "$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$dir/log/server.log</log><errorlog>$dir/log/error.log</errorlog><size>50M</size><count>2</count></logger>
  <http_port>$port</http_port>
  <tcp_port>$tcp</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <max_connections>256</max_connections>
  <keep_alive_timeout>3</keep_alive_timeout>
  <max_concurrent_queries>100</max_concurrent_queries>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <mark_cache_size>67108864</mark_cache_size>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>Europe/Moscow</timezone>
  <mlock_executable>false</mlock_executable>
  <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
  <max_session_timeout>3600</max_session_timeout>
  <default_session_timeout>60</default_session_timeout>
</yandex>
XML
  cat > "$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
  run=()
  if [ "$(id -u)" = 0 ] && id clickhouse >/dev/null 2>&1; then
    # As root, the server runs as the clickhouse user, unless that user cannot reach DIR: a
    # checkout under /root (mode 700 on Debian) is the usual case, and 18.16 runs fine as root.
    if setpriv --reuid=clickhouse --regid=clickhouse --init-groups test -x "$dir" 2>/dev/null; then
      chown -R clickhouse "$dir"; run=(setpriv --reuid=clickhouse --regid=clickhouse --init-groups)
    fi
  fi
  # setpriv execs the server, so $! is the server's own pid (18.16 ignores --pid-file here).
  "${run[@]}" /usr/sbin/clickhouse-server --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1 &
  echo $! > "$dir/server.pid"
  for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$port/?query=SELECT%201" >/dev/null 2>&1; then echo "http://127.0.0.1:$port"; exit 0; fi
    sleep 0.5
  done
  echo "clickhouse did not start; see $dir/log" >&2; tail -n 20 "$dir/log/error.log" "$dir/log/stdout.log" >&2 || true; exit 1;;
stop)
  [ -f "$dir/server.pid" ] || exit 0
  grace=${3:-30}
  [[ $grace =~ ^[0-9]+$ ]] || { echo "GRACE_SECONDS must be a whole number of seconds (got '$grace')" >&2; exit 2; }
  pid=$(cat "$dir/server.pid"); kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((grace * 10))); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  # the port must be free before the caller starts a server on it again
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done;;
*) echo "usage: $0 start DIR [HTTP_PORT [TCP_PORT]] | stop DIR [GRACE_SECONDS]" >&2; exit 2;;
esac
