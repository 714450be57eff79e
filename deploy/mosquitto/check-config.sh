#!/usr/bin/env bash
# Starts a throw-away Mosquitto with vnh's configuration (deploy/mosquitto/mosquitto.conf) on a free
# loopback port, in a temporary directory, and checks what the configuration promises:
#   - the broker accepts the file and loads the dynamic-security plugin;
#   - anonymous clients and wrong passwords are refused;
#   - a device publishes only on its own topics and subscribes only to its own commands;
#   - the service account's shared subscription receives device events;
#   - 2,000 QoS 1 events for an offline persistent session are all kept (the default queue keeps 1,000);
#   - they are still there after a broker restart (persistence);
#   - the TLS listener (8883 in the file) with certificates from deploy/tls/make-dev-certs.py: devices
#     and dynsec-setup.sh get in with the CA, a client trusting another CA and plain MQTT do not.
# The machine's own broker (port 1883) is not touched. Needs mosquitto, mosquitto_ctrl, mosquitto_pub,
# mosquitto_sub and a python3 with `cryptography` (PYTHON=.venv/bin/python to choose one).
# Usage: deploy/mosquitto/check-config.sh [port [tls-port]]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=${1:-$(free_port)}
tls_port=${2:-$(free_port)}
work=$(mktemp -d /tmp/vnh-mosquitto-check.XXXXXX)
broker_pid=

plugin=""
for candidate in /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so \
                 /usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so \
                 /usr/lib/mosquitto_dynamic_security.so \
                 /usr/local/lib/mosquitto_dynamic_security.so; do
    if [ -f "$candidate" ]; then plugin=$candidate; break; fi
done
[ -n "$plugin" ] || { echo "check-config: mosquitto_dynamic_security.so not found" >&2; exit 1; }

stop_broker() {
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        kill -TERM "$broker_pid"
        wait "$broker_pid" 2>/dev/null || true
    fi
    broker_pid=
}
cleanup() {
    stop_broker
    if [ -n "${KEEP_WORKDIR:-}" ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# Development certificates as a deployment makes them, and a second CA nobody here trusts.
"${PYTHON:-python3}" "$here/../tls/make-dev-certs.py" --out "$work/certs" > /dev/null
"${PYTHON:-python3}" "$here/../tls/make-dev-certs.py" --out "$work/other-ca" > /dev/null
mkdir -m 700 "$work/tls"
cp "$work/certs/ca.crt" "$work/tls/ca.crt"
cp "$work/certs/mosquitto.crt" "$work/tls/server.crt"
cp "$work/certs/mosquitto.key" "$work/tls/server.key"
cafile=$work/certs/ca.crt

# The deploy file with only what differs on this machine: ports (loopback only), plugin path, data
# and certificate directories.
sed -e "s|^listener 1883 127.0.0.1$|listener $port 127.0.0.1|" \
    -e "s|^listener 8883$|listener $tls_port 127.0.0.1|" \
    -e "s|^plugin /usr/lib/mosquitto_dynamic_security.so$|plugin $plugin|" \
    -e "s|/mosquitto/data/|$work/|g" \
    -e "s|/mosquitto/tls/|$work/tls/|g" \
    -e "s|^log_dest stdout$|log_dest file $work/broker.log|" \
    "$here/mosquitto.conf" > "$work/mosquitto.conf"
for expected in "listener $port 127.0.0.1" "listener $tls_port 127.0.0.1" "certfile $work/tls/server.crt" \
                "keyfile $work/tls/server.key" "cafile $work/tls/ca.crt" \
                "plugin $plugin" "plugin_opt_config_file $work/dynamic-security.json" \
                "persistence_location $work/" "log_dest file $work/broker.log"; do
    grep -qxF "$expected" "$work/mosquitto.conf" || { echo "check-config: rewrite missed '$expected'" >&2; exit 1; }
done

admin_password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
service_password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
mosquitto_ctrl dynsec init "$work/dynamic-security.json" admin "$admin_password" > /dev/null
chmod 600 "$work/dynamic-security.json"
# Run as root, mosquitto drops to the `mosquitto` user: it must own its data directory.
if [ "$(id -u)" = 0 ] && id mosquitto > /dev/null 2>&1; then chown -R mosquitto: "$work"; fi

start_broker() {
    # Logs go to the file (line-buffered, unlike stdout into a pipe); stderr catches what comes before.
    local started now
    started=$(grep -c "mosquitto version .* running" "$work/broker.log" 2>/dev/null || true)
    mosquitto -c "$work/mosquitto.conf" -v >> "$work/stderr.log" 2>&1 &
    broker_pid=$!
    for _ in $(seq 50); do
        now=$(grep -c "mosquitto version .* running" "$work/broker.log" 2>/dev/null || true)
        [ "${now:-0}" -gt "${started:-0}" ] && return 0
        kill -0 "$broker_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "check-config: broker did not start:" >&2
    cat "$work/stderr.log" "$work/broker.log" >&2 2>/dev/null || true
    exit 1
}

failures=0
check() {  # check <description> <command...>: the command must succeed
    local what=$1; shift
    if "$@"; then echo "ok    $what"; else echo "FAIL  $what"; failures=$((failures + 1)); fi
}

start_broker
grep -q "Loading plugin: $plugin" "$work/broker.log"
if grep -qi "error" "$work/broker.log"; then
    echo "check-config: the broker logged errors at start:" >&2
    cat "$work/broker.log" >&2
    exit 1
fi
echo "broker $(mosquitto -h 2>&1 | head -1 | awk '{print $3}') running on 127.0.0.1:$port, TLS on 127.0.0.1:$tls_port, with $plugin"

# As compose runs it: over TLS, verifying the broker against the CA.
MQTT_HOST=127.0.0.1 MQTT_PORT=$tls_port MQTT_CAFILE=$cafile DYNSEC_ADMIN_PASSWORD=$admin_password \
    VNH_SERVICE_PASSWORD=$service_password sh "$here/dynsec-setup.sh" | tail -1

ctrl() { mosquitto_ctrl -h 127.0.0.1 -p "$port" -u admin -P "$admin_password" dynsec "$@" 2>/dev/null; }
# Two devices, registered the way vnh will register them (README.md, "Device accounts").
for device in dev-a dev-b; do
    ctrl createRole "vnh-device-$device"
    for kind in events telemetry status; do
        ctrl addRoleACL "vnh-device-$device" publishClientSend "vnh/v1/devices/$device/$kind" allow
    done
    ctrl addRoleACL "vnh-device-$device" subscribeLiteral "vnh/v1/devices/$device/commands" allow
    ctrl createClient "$device" -c "$device" -p "token-$device"
    ctrl addClientRole "$device" "vnh-device-$device"
done

conn=(-h 127.0.0.1 -p "$port")
device_a=("${conn[@]}" -u dev-a -P token-dev-a -i dev-a)
service=("${conn[@]}" -u vnh-service -P "$service_password")

check "anonymous client refused" \
    bash -c '! mosquitto_pub "$@" -t vnh/v1/devices/dev-a/events -m x 2>/dev/null' _ "${conn[@]}"
check "wrong device token refused" \
    bash -c '! mosquitto_pub "$@" -u dev-a -P wrong -i dev-a -t vnh/v1/devices/dev-a/events -m x 2>/dev/null' \
    _ "${conn[@]}"
check "device credentials refused under another client id" \
    bash -c '! mosquitto_pub "$@" -u dev-a -P token-dev-a -i someone-else -t vnh/v1/devices/dev-a/events -m x 2>/dev/null' \
    _ "${conn[@]}"
# mosquitto_sub -E exits 0 whether or not its subscription was granted: read what it says.
subscribe_answer() {
    local out
    out=$(mosquitto_sub "$@" -E 2>&1) || { echo "error"; return; }
    case $out in *"subscription requests were denied"*) echo "denied" ;; *) echo "granted" ;; esac
}
subscription_granted() { [ "$(subscribe_answer "$@")" = granted ]; }
subscription_denied() { [ "$(subscribe_answer "$@")" = denied ]; }
check "device may subscribe to its own commands" \
    subscription_granted "${device_a[@]}" -t vnh/v1/devices/dev-a/commands
check "device may not subscribe to another device's commands" \
    subscription_denied "${device_a[@]}" -t vnh/v1/devices/dev-b/commands
check "device may not subscribe to everyone's events" \
    subscription_denied "${device_a[@]}" -t "vnh/v1/devices/+/events"

# The service's shared subscription sees the device's own events and not what it tries to put on
# another device's topic (the broker drops that publish and logs "Denied PUBLISH").
mosquitto_sub "${service[@]}" -i vnh-check -q 1 -t "\$share/vnh/vnh/v1/devices/+/events" -v -W 4 \
    > "$work/shared.out" 2>/dev/null &
sub_pid=$!
sleep 0.5
mosquitto_pub "${device_a[@]}" -q 1 -t vnh/v1/devices/dev-a/events -m '{"event_id":"own"}'
mosquitto_pub "${device_a[@]}" -q 1 -t vnh/v1/devices/dev-b/events -m '{"event_id":"forged"}'
wait "$sub_pid" || true
check "service's shared subscription receives the device's event" grep -q '"own"' "$work/shared.out"
check "a publish on another device's topic is dropped" bash -c "! grep -q forged '$work/shared.out'"
check "the broker logged the refused publish" grep -q "Denied PUBLISH from dev-a .*dev-b/events" "$work/broker.log"

# TLS (what devices and the vnh instances use in deploy/): the CA verifies the broker and its name.
tls=(-h 127.0.0.1 -p "$tls_port")
check "a device publishes over TLS with the deployment's CA" \
    mosquitto_pub "${tls[@]}" --cafile "$cafile" -u dev-a -P token-dev-a -i dev-a -q 1 \
    -t vnh/v1/devices/dev-a/events -m '{"event_id":"tls"}'
check "the service account connects over TLS" \
    mosquitto_sub "${tls[@]}" --cafile "$cafile" -u vnh-service -P "$service_password" -i vnh-tls-check \
    -t 'vnh/v1/devices/+/status' -E
check "a client trusting another CA is refused" \
    bash -c '! mosquitto_pub "$@" -u dev-a -P token-dev-a -i dev-a -t vnh/v1/devices/dev-a/events -m x 2>/dev/null' \
    _ "${tls[@]}" --cafile "$work/other-ca/ca.crt"
check "plain MQTT on the TLS port gets nowhere" \
    bash -c '! timeout 5 mosquitto_pub "$@" -u dev-a -P token-dev-a -i dev-a -t vnh/v1/devices/dev-a/events -m x 2>/dev/null' \
    _ "${tls[@]}"

# Queue and persistence: an offline persistent session of instance vnh-0 accumulates 2,000 events.
mosquitto_sub "${service[@]}" -i vnh-0 -c -q 1 -t "\$share/vnh/vnh/v1/devices/+/events" -E
for i in $(seq 2000); do echo "{\"event_id\":\"q$i\",\"seq\":$i}"; done \
    | mosquitto_pub "${device_a[@]}" -q 1 -t vnh/v1/devices/dev-a/events -l
stop_broker
start_broker
# After a restart the session's queued messages are there; Mosquitto 2.0.11 does not restore a
# persistent session's *shared* subscription itself, so the client subscribes again (as vnh must on
# every connect) and takes its queue.
mosquitto_sub "${service[@]}" -i vnh-0 -c -q 1 -t "\$share/vnh/vnh/v1/devices/+/events" -C 2000 -W 20 \
    > "$work/queued.out" 2>/dev/null || true
received=$(grep -c '"event_id":"q' "$work/queued.out" || true)
check "2,000 queued QoS 1 events survive a broker restart (received $received)" [ "$received" = 2000 ]

stop_broker
if [ "$failures" -gt 0 ]; then
    echo "$failures check(s) failed; broker log:"
    tail -50 "$work/broker.log"
    exit 1
fi
echo "all checks passed"
