#!/bin/sh
# Creates vnh's service account and its role in a running Mosquitto's dynamic-security plugin.
#
# Idempotent: mosquitto_ctrl answers "already exists" for what is there (and exits 0), and the service
# password is set from the environment on every run, so rotating it is: change it in .env, run this
# again (compose runs it on every `up`), restart the vnh instances.
#
# Device clients are not made here: vnh creates one per device when the device is registered (it holds
# the token only then) and disables it on revocation; README.md lists the exact commands.
#
# POSIX sh: it runs in the eclipse-mosquitto image (busybox ash) and on a developer's machine alike.
#
# Environment:
#   MQTT_HOST, MQTT_PORT                 broker address (mosquitto, 8883)
#   MQTT_CAFILE                          CA that verifies the broker's certificate: TLS (compose sets it);
#                                        unset, plain MQTT (e.g. the broker's own loopback listener 1883)
#   DYNSEC_ADMIN_USER                    dynsec admin made by `mosquitto_ctrl dynsec init` (admin)
#   DYNSEC_ADMIN_PASSWORD                its password (required)
#   VNH_SERVICE_USER                     the account vnh connects with (vnh-service)
#   VNH_SERVICE_PASSWORD                 its password (required; the password part of vnh's MQTT_URL)
set -eu

host=${MQTT_HOST:-mosquitto}
port=${MQTT_PORT:-8883}
cafile=${MQTT_CAFILE:-}
admin=${DYNSEC_ADMIN_USER:-admin}
admin_password=${DYNSEC_ADMIN_PASSWORD:?DYNSEC_ADMIN_PASSWORD is required}
service=${VNH_SERVICE_USER:-vnh-service}
service_password=${VNH_SERVICE_PASSWORD:?VNH_SERVICE_PASSWORD is required}

# mosquitto_ctrl exits 0 even when a command is refused or the login fails, so success is read from
# what it prints. Dropped from its output: the warning about running without TLS (printed when
# MQTT_CAFILE is unset: the broker's loopback listener) and the "already exists" answers of a re-run.
ctrl() {
    if [ -n "$cafile" ]; then set -- --cafile "$cafile" dynsec "$@"; else set -- dynsec "$@"; fi
    mosquitto_ctrl -h "$host" -p "$port" -u "$admin" -P "$admin_password" "$@" 2>&1 \
        | grep -v -e 'without encryption' -e 'including passwords' -e 'already exists' -e '^$' || true
}

# Wait for the broker and for a working admin login (the broker may still be starting).
tries=0
until ctrl getDefaultACLAccess | grep -q '^publishClientSend'; do
    tries=$((tries + 1))
    if [ "$tries" -ge 60 ]; then
        echo "dynsec-setup: no answer from the dynsec plugin at $host:$port as $admin after 60 s" >&2
        exit 1
    fi
    sleep 1
done

# What the broker refuses to anyone not granted otherwise. These are dynsec's defaults; set explicitly
# so the file does not depend on them: nobody publishes or subscribes without a role saying so.
ctrl setDefaultACLAccess publishClientSend deny
ctrl setDefaultACLAccess subscribe deny
ctrl setDefaultACLAccess publishClientReceive allow
ctrl setDefaultACLAccess unsubscribe allow

# The vnh service: reads every device's uplink and publishes downlink commands.
# - `$share/<group>/...`: the ingest of several instances shares one subscription (the group comes from
#   VNH_MQTT__SHARE_GROUP, so any group is allowed). Mosquitto checks a shared subscription against the
#   ACL with its `$share/<group>/` prefix, so it needs its own entries.
# - the plain topics: `status` is retained, and retained messages are not sent to shared subscriptions;
#   a single instance may also subscribe plainly.
role=vnh-service
ctrl createRole "$role"
for kind in events telemetry status; do
    ctrl addRoleACL "$role" subscribePattern "\$share/+/vnh/v1/devices/+/$kind" allow
    ctrl addRoleACL "$role" subscribePattern "vnh/v1/devices/+/$kind" allow
done
ctrl addRoleACL "$role" publishClientSend "vnh/v1/devices/+/commands" allow

# Every vnh instance logs in with this one account under its own client id (vnh-0, vnh-1, ...), so the
# client is not bound to a client id.
ctrl createClient "$service" -p "$service_password"
ctrl setClientPassword "$service" "$service_password"
if ! ctrl getClient "$service" | grep -q "^Roles: *$role "; then
    ctrl addClientRole "$service" "$role"
fi

ctrl getClient "$service" | grep -q "^Roles: *$role " || { echo "dynsec-setup: $service lacks role $role" >&2; exit 1; }
echo "dynsec-setup: role $role and client $service are in place on $host:$port"
