#!/usr/bin/env bash
# Start/stop the real message brokers the Mediation Host tests run against.
#
#   scripts/brokers.sh up     [rabbitmq] [mosquitto] [kafka] [artemis] [toxiproxy]
#   scripts/brokers.sh down   [names...]
#   scripts/brokers.sh status [names...]
#
# With no names, all four brokers and Toxiproxy (the fault proxy that the fault tests put
# between the host and each broker) are handled. See docs/brokers.md.
#
# Everything that is not a Debian package (jars, tarballs, unpacked dirs,
# generated configs, data, logs, pid files) lives under
# ${MEDIATION_CACHE:-$HOME/.cache/mediation-host}/brokers (Toxiproxy's Go build included), outside the clone,
# so that a fresh clone (CI) reuses it and a warm `up` takes seconds.
#
# Environment knobs:
#   MEDIATION_CACHE          cache root (default $HOME/.cache/mediation-host)
#   BROKERS_TIMEOUT          seconds to wait for each broker (default 120)
#   BROKERS_FRESH=1          wipe the data dirs of the brokers `up` starts
#   MAVEN_CENTRAL            Maven repository base URL for the Artemis tarball
set -euo pipefail

# --- Ports (all listeners bind to 127.0.0.1 only) ---------------------------
readonly HOST=127.0.0.1
readonly RABBITMQ_PORT=5672          # AMQP 0-9-1
readonly RABBITMQ_DIST_PORT=25672    # Erlang distribution (rabbitmqctl); epmd on 4369
readonly MOSQUITTO_PORT=1883         # MQTT 3.1.1 / 5, anonymous
readonly MOSQUITTO_AUTH_PORT=1884    # MQTT 3.1.1 / 5, TEST_USER only
readonly MOSQUITTO_TLS_PORT=8883     # MQTT 3.1.1 / 5 over TLS, anonymous
readonly KAFKA_PORT=9092             # Kafka PLAINTEXT listener (clients)
readonly KAFKA_CONTROLLER_PORT=9093  # KRaft controller listener
readonly KAFKA_SASL_PORT=9094        # Kafka SASL_PLAINTEXT listener (PLAIN, TEST_USER)
readonly KAFKA_SASL_SSL_PORT=9095    # Kafka SASL_SSL listener (PLAIN, TEST_USER; test CA)
# Kafka tells its clients where to connect (the advertised listener), so a proxy in front of
# a listener only stays in the path if that listener advertises the proxy: FAULTS listens
# on KAFKA_FAULTS_PORT and advertises TOXIPROXY_KAFKA_PORT, where the fault tests'
# Toxiproxy proxy listens and forwards to KAFKA_FAULTS_PORT.
readonly KAFKA_FAULTS_PORT=9096      # Kafka PLAINTEXT listener behind Toxiproxy (FAULTS)
readonly TOXIPROXY_KAFKA_PORT=9097   # advertised by FAULTS; a Toxiproxy proxy listens here
readonly TOXIPROXY_PORT=8474         # Toxiproxy's HTTP API
readonly ARTEMIS_AMQP_PORT=5673      # AMQP 1.0 (not 5672: RabbitMQ has that)
readonly ARTEMIS_AMQPS_PORT=5674     # AMQP 1.0 over TLS (test CA artemis/tls/ca.pem)
readonly ARTEMIS_CORE_PORT=61616     # Artemis core (multi-protocol) acceptor

# --- Credentials (test-only; loopback only) ---------------------------------
# RabbitMQ: the built-in guest/guest (works from loopback) plus TEST_USER,
# administrator with ".*" configure/write/read on vhost "/".
# Mosquitto: anonymous access on MOSQUITTO_PORT; TEST_USER with its password (and
# nobody else) on MOSQUITTO_AUTH_PORT; anonymous over TLS on MOSQUITTO_TLS_PORT, with a
# certificate for 127.0.0.1 signed by a test CA (mosquitto/tls/ca.pem).
# Kafka: no authentication on PLAINTEXT 9092; SASL PLAIN with TEST_USER on
# SASL_PLAINTEXT 9094 (so that wrong credentials can be tested for real) and on
# SASL_SSL 9095, whose certificate (for 127.0.0.1 and localhost) is signed by a test
# CA generated once: $KAFKA_DIR/tls/ca.pem.
# Artemis: login required; ARTEMIS_ADMIN_USER and TEST_USER, both in role
# "amq" which has every permission on every address.
readonly TEST_USER=mediation
readonly TEST_PASSWORD=mediation-secret
readonly ARTEMIS_ADMIN_USER=artemis
readonly ARTEMIS_ADMIN_PASSWORD=artemis

# --- Pinned versions ---------------------------------------------------------
readonly KAFKA_VERSION=4.4.0         # org.apache.kafka:kafka_2.13 + kafka-tools
readonly LOG4J_VERSION=2.25.5        # log4j-core + log4j-slf4j-impl for Kafka
readonly ARTEMIS_VERSION=2.56.0      # org.apache.artemis:apache-artemis:tar.gz:bin
readonly TOXIPROXY_VERSION=2.5.0     # github.com/Shopify/toxiproxy/v2, built with `go install`
# Artemis moved from org.apache.activemq to org.apache.artemis; newer releases
# are only published under the new groupId.
readonly ARTEMIS_GROUP_PATH=org/apache/artemis
# Bump when the generated instance/config layout changes, to force regeneration.
readonly CONFIG_REV=1
# Artemis's own revision, so that changing its broker.xml does not regenerate Kafka.
# 2: addresses under `mh-strict.` are never auto-created (tests of a missing address).
# 3: no blocking of producers when the (shared) disk is 90 % full.
# 4: an AMQP-over-TLS acceptor.
readonly ARTEMIS_CONFIG_REV=4
# The same for Kafka alone (2: the SASL_PLAINTEXT listener; 3: the FAULTS listener), so
# that changing Kafka's configuration does not regenerate the other brokers.
readonly KAFKA_CONFIG_REV=3

readonly ALL_BROKERS=(rabbitmq mosquitto kafka artemis toxiproxy)
readonly TIMEOUT=${BROKERS_TIMEOUT:-120}
readonly MAVEN_CENTRAL=${MAVEN_CENTRAL:-https://repo1.maven.org/maven2}

CACHE_ROOT=${MEDIATION_CACHE:-${HOME:?HOME is not set}/.cache/mediation-host}
readonly CACHE="$CACHE_ROOT/brokers"

readonly RMQ_DIR="$CACHE/rabbitmq"
readonly RMQ_NODE=rabbit@localhost
readonly RMQ_BIN=/usr/lib/rabbitmq/bin
readonly MOSQ_DIR="$CACHE/mosquitto"
readonly KAFKA_DIR="$CACHE/kafka"
readonly KAFKA_LIBS="$KAFKA_DIR/libs-$KAFKA_VERSION"
readonly ARTEMIS_DIR="$CACHE/artemis"
readonly ARTEMIS_HOME="$ARTEMIS_DIR/apache-artemis-$ARTEMIS_VERSION"
readonly ARTEMIS_INSTANCE="$ARTEMIS_DIR/instance"
readonly TOXI_DIR="$CACHE/toxiproxy"
# `go install` names the binary after its package directory (cmd/server).
readonly TOXI_BIN="$TOXI_DIR/bin-$TOXIPROXY_VERSION/server"

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo

# --- Small helpers -----------------------------------------------------------
log() { printf 'brokers: %s\n' "$*"; }
err() { printf 'brokers: ERROR: %s\n' "$*" >&2; }
die() { err "$*"; exit 1; }

usage() {
  cat >&2 <<EOF
usage: $0 up|down|status [${ALL_BROKERS[*]}]
EOF
  exit 2
}

# port_open PORT: something accepts TCP connections on $HOST:PORT.
port_open() {
  # shellcheck disable=SC2016  # expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

# probe PORT REQUEST NBYTES [TRAILER]: send REQUEST (a printf format with \x
# escapes), print the first NBYTES of the reply as hex, then send TRAILER.
probe() {
  # shellcheck disable=SC2016  # expanded by the inner bash
  timeout 5 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "$2" >&3
    head -c "$3" <&3 | od -An -v -tx1 | tr -d " \n"
    [[ -z ${4:-} ]] || printf "$4" >&3 2>/dev/null || true
  ' "$HOST" "$@" 2>/dev/null || true
}

# Protocol-level liveness checks (cheap: no JVM / Erlang VM started).
rabbitmq_alive() {
  # AMQP 0-9-1 header; the broker answers with a Connection.Start method frame
  # (type 1, channel 0, class 10, method 10).
  local r
  r=$(probe "$RABBITMQ_PORT" 'AMQP\x00\x00\x09\x01' 11)
  [[ $r == 010000????????000a000a ]]
}
mosquitto_alive() {
  # MQTT 5 CONNECT (clean start, empty client id) -> CONNACK reason 0; then DISCONNECT.
  local r
  r=$(probe "$MOSQUITTO_PORT" '\x10\x0d\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x00' 4 '\xe0\x00')
  [[ $r == 20??0000 ]]
}
kafka_alive() {
  # ApiVersions v0 request, correlation id 1 -> response with correlation id 1, error 0.
  local r
  r=$(probe "$KAFKA_PORT" '\x00\x00\x00\x0b\x00\x12\x00\x00\x00\x00\x00\x01\x00\x01x' 10)
  [[ $r == ????????000000010000 ]]
}
toxiproxy_alive() {
  # GET /version -> an HTTP 200 status line.
  local r
  r=$(probe "$TOXIPROXY_PORT" 'GET /version HTTP/1.0\r\n\r\n' 12)
  [[ $r == 485454502f312e3?20323030 ]]
}
artemis_alive() {
  # AMQP 1.0 SASL header -> the broker echoes the SASL protocol header.
  local r
  r=$(probe "$ARTEMIS_AMQP_PORT" 'AMQP\x03\x01\x00\x00' 8)
  [[ $r == 414d515003010000 ]]
}

# pid_of FILE PATTERN: print the pid in FILE if that process is alive and its
# command line contains PATTERN (guards against recycled pids).
pid_of() {
  local file=$1 pattern=$2 pid
  [[ -s $file ]] || return 1
  pid=$(tr -dc '0-9' <"$file")
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern" || return 1
  echo "$pid"
}

# wait_gone PID PORT SECONDS: wait for the process to exit and the port to close.
wait_gone() {
  local pid=$1 port=$2 deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    if { [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; } && ! port_open "$port"; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}

# stop_pid NAME PID PORT: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local name=$1 pid=$2 port=$3
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" "$port" 60; then
    err "$name (pid $pid) did not stop within 60s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" "$port" 10 || die "$name still holds port $port"
  fi
}

# launch LOGFILE CMD...: start CMD detached (own session, no stdin, output to
# LOGFILE, without the lock fd); its pid goes to LAUNCHED_PID.
LAUNCHED_PID=""
launch() {
  local out=$1
  shift
  setsid nohup "$@" >>"$out" 2>&1 </dev/null 9>&- &
  LAUNCHED_PID=$!
}

deb_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# --- Installation --------------------------------------------------------------
install_prereqs() {
  local pkgs=() b p missing=()
  for b in "${SELECTED[@]}"; do
    case $b in
      rabbitmq) pkgs+=(rabbitmq-server) ;;
      mosquitto) pkgs+=(mosquitto mosquitto-clients) ;;
      kafka)
        command -v java >/dev/null || pkgs+=(openjdk-17-jre-headless)
        command -v mvn >/dev/null || pkgs+=(maven) ;;
      artemis)
        command -v java >/dev/null || pkgs+=(openjdk-17-jre-headless)
        command -v curl >/dev/null || pkgs+=(curl ca-certificates) ;;
      toxiproxy)
        [[ -x $TOXI_BIN ]] || command -v go >/dev/null || pkgs+=(golang-go ca-certificates) ;;
    esac
  done
  for p in "${pkgs[@]}"; do
    deb_installed "$p" || [[ " ${missing[*]} " == *" $p "* ]] || missing+=("$p")
  done
  ((${#missing[@]})) || return 0

  log "installing Debian packages: ${missing[*]} (log: $CACHE/apt.log)"
  if [[ -n $SUDO ]] && ! command -v sudo >/dev/null; then
    die "need root (or sudo) to install: ${missing[*]}"
  fi
  # Without an init system, a package's postinst could still try to start the
  # system-wide service (on 0.0.0.0, as another user). Block that for the
  # duration of the install unless a policy is already in place.
  local policy=/usr/sbin/policy-rc.d added_policy=""
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    added_policy=1
  fi
  local rc=0
  {
    $SUDO apt-get update &&
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  } >>"$CACHE/apt.log" 2>&1 || rc=$?
  [[ -z $added_policy ]] || $SUDO rm -f "$policy"
  ((rc == 0)) || die "apt-get install ${missing[*]} failed (see $CACHE/apt.log)"
}

install_kafka() {
  if [[ -f $KAFKA_LIBS/.complete ]]; then
    ln -sfn "$(basename "$KAFKA_LIBS")" "$KAFKA_DIR/libs"
    return 0
  fi
  log "kafka: resolving kafka_2.13 $KAFKA_VERSION + kafka-tools from Maven Central (log: $KAFKA_DIR/logs/mvn.log)"
  mkdir -p "$KAFKA_DIR/logs" "$KAFKA_DIR/build"
  cat >"$KAFKA_DIR/build/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/brokers.sh: the Kafka broker + tools runtime classpath. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.mediation-host</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- Kafka logs through slf4j 1.7 and log4j2; route both to log4j2 core. -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  local tmp="$KAFKA_LIBS.tmp"
  rm -rf "$tmp"
  # A private local repository keeps every download under the cache; it is
  # deleted once the jars are copied out.
  if ! mvn -B -q -f "$KAFKA_DIR/build/pom.xml" \
      -Dmaven.repo.local="$KAFKA_DIR/build/m2" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
      >"$KAFKA_DIR/logs/mvn.log" 2>&1; then
    die "kafka: Maven could not resolve the Kafka jars (see $KAFKA_DIR/logs/mvn.log)"
  fi
  [[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar && -f $tmp/kafka-tools-$KAFKA_VERSION.jar ]] ||
    die "kafka: Kafka jars missing after Maven run (see $KAFKA_DIR/logs/mvn.log)"
  touch "$tmp/.complete"
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
  rm -rf "$KAFKA_DIR/build/m2"
  ln -sfn "$(basename "$KAFKA_LIBS")" "$KAFKA_DIR/libs"
}

install_toxiproxy() {
  [[ -x $TOXI_BIN ]] && return 0
  log "toxiproxy: building $TOXIPROXY_VERSION with go install (log: $TOXI_DIR/build.log)"
  mkdir -p "$TOXI_DIR"
  # Every Go path under the cache, so that a fresh clone reuses the build.
  if ! env GOBIN="$(dirname "$TOXI_BIN")" GOPATH="$TOXI_DIR/go" GOMODCACHE="$TOXI_DIR/go/pkg/mod" \
      GOCACHE="$TOXI_DIR/go-build" GOFLAGS=-modcacherw \
      go install "github.com/Shopify/toxiproxy/v2/cmd/server@v$TOXIPROXY_VERSION" >"$TOXI_DIR/build.log" 2>&1; then
    die "toxiproxy: go install failed (see $TOXI_DIR/build.log)"
  fi
  [[ -x $TOXI_BIN ]] || die "toxiproxy: no binary at $TOXI_BIN after go install (see $TOXI_DIR/build.log)"
}

install_artemis() {
  local name="apache-artemis-$ARTEMIS_VERSION-bin.tar.gz"
  local tarball="$ARTEMIS_DIR/$name"
  local url="$MAVEN_CENTRAL/$ARTEMIS_GROUP_PATH/apache-artemis/$ARTEMIS_VERSION/$name"
  mkdir -p "$ARTEMIS_DIR/logs"
  if [[ ! -f $tarball ]]; then
    log "artemis: downloading $url"
    curl -fsSL --retry 3 -o "$tarball.part" "$url" || die "artemis: download failed: $url"
    local want got
    want=$(curl -fsSL --retry 3 "$url.sha512" | awk '{print $1}') || die "artemis: checksum download failed: $url.sha512"
    got=$(sha512sum "$tarball.part" | awk '{print $1}')
    [[ -n $want && $want == "$got" ]] || { rm -f "$tarball.part"; die "artemis: sha512 mismatch for $name"; }
    mv "$tarball.part" "$tarball"
  fi
  if [[ ! -x $ARTEMIS_HOME/bin/artemis ]]; then
    local tmp="$ARTEMIS_DIR/unpack.tmp"
    rm -rf "$tmp" && mkdir -p "$tmp"
    tar -xzf "$tarball" -C "$tmp" || die "artemis: cannot unpack $tarball"
    rm -rf "$ARTEMIS_HOME"
    mv "$tmp/apache-artemis-$ARTEMIS_VERSION" "$ARTEMIS_HOME"
    rm -rf "$tmp"
  fi
}

# --- RabbitMQ ------------------------------------------------------------------
# The Debian wrappers in /usr/sbin switch to the rabbitmq user and its files in
# /var/lib/rabbitmq; we run the real scripts directly, with every path (and
# the Erlang cookie, via HOME) under the cache.
readonly RMQ_ENV=(
  HOME="$RMQ_DIR/home"
  RABBITMQ_NODENAME="$RMQ_NODE"
  RABBITMQ_USE_LONGNAME=false
  RABBITMQ_NODE_IP_ADDRESS="$HOST"
  RABBITMQ_NODE_PORT="$RABBITMQ_PORT"
  RABBITMQ_DIST_PORT="$RABBITMQ_DIST_PORT"
  RABBITMQ_CONF_ENV_FILE="$RMQ_DIR/rabbitmq-env.conf"
  RABBITMQ_CONFIG_FILE="$RMQ_DIR/rabbitmq.conf"
  RABBITMQ_ADVANCED_CONFIG_FILE="$RMQ_DIR/advanced.config"
  RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/enabled_plugins"
  RABBITMQ_MNESIA_BASE="$RMQ_DIR/data"
  RABBITMQ_LOG_BASE="$RMQ_DIR/log"
  RABBITMQ_LOGS="$RMQ_DIR/log/rabbit.log"
  RABBITMQ_PID_FILE="$RMQ_DIR/rabbitmq.pid"
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  ERL_EPMD_ADDRESS="$HOST"
  ERL_CRASH_DUMP="$RMQ_DIR/log/erl_crash.dump"
)
rmqctl() { (cd "$RMQ_DIR" && env "${RMQ_ENV[@]}" "$RMQ_BIN/rabbitmqctl" -q -n "$RMQ_NODE" "$@" 9>&-); }
rabbitmq_pid() { pid_of "$RMQ_DIR/rabbitmq.pid" beam; }
rabbitmq_log() { echo "$RMQ_DIR/log/rabbit.log (and $RMQ_DIR/log/startup.log)"; }
rabbitmq_addr() { echo "amqp://$HOST:$RABBITMQ_PORT (guest/guest, $TEST_USER/$TEST_PASSWORD)"; }
rabbitmq_port() { echo "$RABBITMQ_PORT"; }

rabbitmq_start() {
  mkdir -p "$RMQ_DIR/home" "$RMQ_DIR/log"
  [[ -z ${BROKERS_FRESH:-} ]] || rm -rf "$RMQ_DIR/data"
  mkdir -p "$RMQ_DIR/data"
  : >"$RMQ_DIR/rabbitmq-env.conf"
  [[ -f $RMQ_DIR/advanced.config ]] || echo '[].' >"$RMQ_DIR/advanced.config"
  echo '[].' >"$RMQ_DIR/enabled_plugins"
  cat >"$RMQ_DIR/rabbitmq.conf" <<EOF
# Generated by scripts/brokers.sh
listeners.tcp.default = $HOST:$RABBITMQ_PORT
loopback_users.guest = true
log.file.level = info
log.console = false
EOF
  : >"$RMQ_DIR/log/startup.log"
  rm -f "$RMQ_DIR/rabbitmq.pid"
  launch "$RMQ_DIR/log/startup.log" env "${RMQ_ENV[@]}" "$RMQ_BIN/rabbitmq-server"
}

rabbitmq_verify() {
  # Full boot (not just the listener), then the test user.
  rmqctl await_startup --timeout "$TIMEOUT" >>"$RMQ_DIR/log/ctl.log" 2>&1 || return 1
  # The user lives in the (kept) data dir; create it on first boot.
  if rmqctl authenticate_user "$TEST_USER" "$TEST_PASSWORD" >/dev/null 2>&1; then
    return 0
  fi
  log "rabbitmq: creating user $TEST_USER"
  {
    rmqctl add_user "$TEST_USER" "$TEST_PASSWORD" ||
      rmqctl change_password "$TEST_USER" "$TEST_PASSWORD"
  } >>"$RMQ_DIR/log/ctl.log" 2>&1 || return 1
  rmqctl set_user_tags "$TEST_USER" administrator >>"$RMQ_DIR/log/ctl.log" 2>&1 &&
    rmqctl set_permissions -p / "$TEST_USER" '.*' '.*' '.*' >>"$RMQ_DIR/log/ctl.log" 2>&1
}

rabbitmq_stop() {
  local pid
  pid=$(rabbitmq_pid) || pid=""
  if [[ -z $pid ]] && ! port_open "$RABBITMQ_PORT"; then return 0; fi
  rmqctl stop >>"$RMQ_DIR/log/ctl.log" 2>&1 || true
  if ! wait_gone "$pid" "$RABBITMQ_PORT" 60; then
    if [[ -z $pid ]]; then
      err "rabbitmq: port $RABBITMQ_PORT still open and no live pid file; not started by this script?"
      return 1
    fi
    stop_pid rabbitmq "$pid" "$RABBITMQ_PORT"
  fi
  # epmd refuses to die while any Erlang node is still registered.
  env "${RMQ_ENV[@]}" epmd -kill >/dev/null 2>&1 || true
}

# --- Mosquitto -----------------------------------------------------------------
mosquitto_pid() { pid_of "$MOSQ_DIR/mosquitto.pid" "$MOSQ_DIR/mosquitto.conf"; }
mosquitto_log() { echo "$MOSQ_DIR/mosquitto.log"; }
mosquitto_addr() {
  echo "mqtt://$HOST:$MOSQUITTO_PORT (anonymous, MQTT 3.1.1/5); mqtt://$HOST:$MOSQUITTO_AUTH_PORT ($TEST_USER);" \
    "mqtts://$HOST:$MOSQUITTO_TLS_PORT (CA $MOSQ_DIR/tls/ca.pem)"
}
mosquitto_port() { echo "$MOSQUITTO_PORT"; }

mosquitto_start() {
  mkdir -p "$MOSQ_DIR"
  # The Debian default config and init script expect /run/mosquitto.
  if [[ -n $SUDO ]]; then
    $SUDO -n mkdir -p /run/mosquitto 2>/dev/null || true
  else
    mkdir -p /run/mosquitto
  fi
  # The password file of the authenticated listener (mosquitto_passwd hashes it).
  rm -f "$MOSQ_DIR/passwd"
  (umask 077 && mosquitto_passwd -b -c "$MOSQ_DIR/passwd" "$TEST_USER" "$TEST_PASSWORD") \
    >>"$MOSQ_DIR/mosquitto.out" 2>&1
  [[ -z ${BROKERS_FRESH:-} ]] || rm -rf "$MOSQ_DIR/data"
  mosquitto_certificates
  mkdir -p "$MOSQ_DIR/data"
  {
    echo "# Generated by scripts/brokers.sh"
    echo "pid_file $MOSQ_DIR/mosquitto.pid"
    # Persistent sessions and their queued QoS 1/2 messages survive a restart:
    # saved on a clean stop (SIGTERM, as `down` does) and every 10 s.
    echo "persistence true"
    echo "persistence_location $MOSQ_DIR/data/"
    echo "autosave_interval 10"
    # Queue for a disconnected persistent session without Mosquitto's default cap
    # of 1000 messages, so that tests that stop a consumer lose nothing.
    echo "max_queued_messages 0"
    # Acknowledgements go out at once, as a production broker behind a gateway should
    # send them (with Nagle's algorithm a PUBACK waits for the client's delayed ACK).
    echo "set_tcp_nodelay true"
    echo "log_dest file $MOSQ_DIR/mosquitto.log"
    echo "log_timestamp_format %Y-%m-%dT%H:%M:%S"
    # As root, mosquitto would drop to the mosquitto user, which cannot write
    # under the cache dir; stay root (this has no effect as non-root).
    echo "user $(id -un)"
    # Each listener has its own authentication settings.
    echo "per_listener_settings true"
    echo "listener $MOSQUITTO_PORT $HOST"
    echo "allow_anonymous true"
    echo "listener $MOSQUITTO_AUTH_PORT $HOST"
    echo "allow_anonymous false"
    echo "password_file $MOSQ_DIR/passwd"
    echo "listener $MOSQUITTO_TLS_PORT $HOST"
    echo "allow_anonymous true"
    echo "cafile $MOSQ_DIR/tls/ca.pem"
    echo "certfile $MOSQ_DIR/tls/server.pem"
    echo "keyfile $MOSQ_DIR/tls/server.key"
  } >"$MOSQ_DIR/mosquitto.conf"
  rm -f "$MOSQ_DIR/mosquitto.pid"
  launch "$MOSQ_DIR/mosquitto.out" mosquitto -c "$MOSQ_DIR/mosquitto.conf"
}
mosquitto_verify() { :; }

# A test CA (DIR/ca.pem) and a server certificate for 127.0.0.1 and localhost
# (DIR/server.pem, key DIR/server.key), made once (10 years); openssl's output goes to LOG.
test_certificates() {
  local dir=$1 log=$2
  [[ -f $dir/server.pem && -f $dir/ca.pem ]] && return 0
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=mediation-host test CA" \
      -keyout ca.key -out ca.pem &&
      openssl req -newkey rsa:2048 -nodes -subj "/CN=$HOST" -keyout server.key -out server.csr &&
      printf '%s\n' "subjectAltName=IP:$HOST,DNS:localhost" "basicConstraints=CA:FALSE" \
        "keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >server.ext &&
      openssl x509 -req -days 3650 -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -extfile server.ext -out server.pem
  ) >>"$log" 2>&1 || die "openssl failed making test certificates in $dir (see $log)"
}
mosquitto_certificates() { test_certificates "$MOSQ_DIR/tls" "$MOSQ_DIR/mosquitto.out"; }
mosquitto_stop() {
  local pid
  pid=$(mosquitto_pid) || return 0
  stop_pid mosquitto "$pid" "$MOSQUITTO_PORT"
  rm -f "$MOSQ_DIR/mosquitto.pid"
}

# --- Kafka (KRaft, single combined node) --------------------------------------
kafka_pid() { pid_of "$KAFKA_DIR/kafka.pid" kafka.Kafka; }
kafka_log() { echo "$KAFKA_DIR/logs/server.log (and $KAFKA_DIR/logs/kafka.out)"; }
kafka_addr() {
  echo "$HOST:$KAFKA_PORT (PLAINTEXT, no auth; SASL PLAIN $TEST_USER/$TEST_PASSWORD on SASL_PLAINTEXT $HOST:$KAFKA_SASL_PORT and SASL_SSL $HOST:$KAFKA_SASL_SSL_PORT, CA $KAFKA_DIR/tls/ca.pem; FAULTS $HOST:$KAFKA_FAULTS_PORT advertised as $HOST:$TOXIPROXY_KAFKA_PORT; controller $HOST:$KAFKA_CONTROLLER_PORT)"
}
kafka_port() { echo "$KAFKA_PORT"; }
# A Kafka started from an older configuration lacks the FAULTS listener (revision 3).
kafka_stale() { ! port_open "$KAFKA_FAULTS_PORT"; }

# Run a Kafka CLI class (e.g. org.apache.kafka.tools.TopicCommand) quietly.
kafka_tool() {
  java -Xmx256m -Dlog4j2.configurationFile="$KAFKA_DIR/config/tools-log4j2.xml" \
    -cp "$KAFKA_DIR/libs/*" "$@"
}

# The test CA and the broker's certificate for the SASL_SSL listener, made once.
kafka_tls() {
  local dir="$KAFKA_DIR/tls"
  [[ -f $dir/server-keystore.pem ]] && return 0
  mkdir -p "$KAFKA_DIR/logs"
  test_certificates "$dir" "$KAFKA_DIR/logs/tls.log"
  # Kafka's PEM key store: the unencrypted PKCS#8 key, then the certificate chain.
  cat "$dir/server.key" "$dir/server.pem" "$dir/ca.pem" >"$dir/server-keystore.pem"
}

kafka_configure() {
  mkdir -p "$KAFKA_DIR/config" "$KAFKA_DIR/logs" "$KAFKA_DIR/bin"
  kafka_tls
  cat >"$KAFKA_DIR/config/server.properties" <<EOF
# Generated by scripts/brokers.sh
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT,SASL_PLAINTEXT://$HOST:$KAFKA_SASL_PORT,SASL_SSL://$HOST:$KAFKA_SASL_SSL_PORT,FAULTS://$HOST:$KAFKA_FAULTS_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,SASL_PLAINTEXT://$HOST:$KAFKA_SASL_PORT,SASL_SSL://$HOST:$KAFKA_SASL_SSL_PORT,FAULTS://$HOST:$TOXIPROXY_KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,FAULTS:PLAINTEXT
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$TEST_USER="$TEST_PASSWORD";
listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$TEST_USER="$TEST_PASSWORD";
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$KAFKA_DIR/tls/server-keystore.pem
log.dirs=$KAFKA_DIR/data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  cat >"$KAFKA_DIR/config/log4j2.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/brokers.sh: Kafka broker logging. -->
<Configuration status="warn">
  <Appenders>
    <RollingFile name="file" fileName="${sys:kafka.logs.dir}/server.log"
                 filePattern="${sys:kafka.logs.dir}/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="50 MB"/>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="org.apache.kafka.controller" level="info"/>
    <Logger name="state.change.logger" level="warn"/>
    <Root level="info"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
EOF
  cat >"$KAFKA_DIR/config/tools-log4j2.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/brokers.sh: Kafka CLI tools log warnings to stderr. -->
<Configuration status="warn">
  <Appenders><Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="warn"><AppenderRef ref="stderr"/></Root></Loggers>
</Configuration>
EOF
  # Convenience launcher for tests: kafka/bin/kafka-class <main class> [args]
  cat >"$KAFKA_DIR/bin/kafka-class" <<EOF
#!/bin/sh
# Generated by scripts/brokers.sh. Example:
#   kafka-class org.apache.kafka.tools.ProducerPerformance --topic t --num-records 1000 \\
#     --record-size 100 --throughput -1 --command-property bootstrap.servers=$HOST:$KAFKA_PORT
exec java \${KAFKA_HEAP_OPTS:--Xmx256m} -Dlog4j2.configurationFile="$KAFKA_DIR/config/tools-log4j2.xml" \\
  -cp "$KAFKA_DIR/libs/*" "\$@"
EOF
  chmod 755 "$KAFKA_DIR/bin/kafka-class"
}

kafka_start() {
  kafka_configure
  local data="$KAFKA_DIR/data" stamp="$KAFKA_VERSION/$KAFKA_CONFIG_REV"
  if [[ -n ${BROKERS_FRESH:-} ]] || [[ ! -f $data/meta.properties ]] ||
     [[ $(cat "$data/.formatted-by" 2>/dev/null) != "$stamp" ]]; then
    rm -rf "$data"
    mkdir -p "$data"
    local id
    id=$(kafka_tool kafka.tools.StorageTool random-uuid 2>>"$KAFKA_DIR/logs/format.log") ||
      die "kafka: StorageTool random-uuid failed (see $KAFKA_DIR/logs/format.log)"
    kafka_tool kafka.tools.StorageTool format -t "$id" -c "$KAFKA_DIR/config/server.properties" \
      >>"$KAFKA_DIR/logs/format.log" 2>&1 ||
      die "kafka: storage format failed (see $KAFKA_DIR/logs/format.log)"
    echo "$id" >"$KAFKA_DIR/cluster.id"
    echo "$stamp" >"$data/.formatted-by"
  fi
  : >"$KAFKA_DIR/logs/kafka.out"
  launch "$KAFKA_DIR/logs/kafka.out" java -Xms128m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dkafka.logs.dir="$KAFKA_DIR/logs" -Dlog4j2.configurationFile="$KAFKA_DIR/config/log4j2.xml" \
    -cp "$KAFKA_DIR/libs/*" kafka.Kafka "$KAFKA_DIR/config/server.properties"
  echo "$LAUNCHED_PID" >"$KAFKA_DIR/kafka.pid"
}

kafka_verify() {
  # A real metadata round trip through the admin client.
  local deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS < deadline)); do
    if timeout 60 java -Xmx256m -Dlog4j2.configurationFile="$KAFKA_DIR/config/tools-log4j2.xml" \
        -cp "$KAFKA_DIR/libs/*" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "$HOST:$KAFKA_PORT" --list >>"$KAFKA_DIR/logs/tools.log" 2>&1; then
      return 0
    fi
    sleep 1
  done
  return 1
}

kafka_stop() {
  local pid
  pid=$(kafka_pid) || return 0
  stop_pid kafka "$pid" "$KAFKA_PORT"
  wait_gone "" "$KAFKA_CONTROLLER_PORT" 10 || true
  rm -f "$KAFKA_DIR/kafka.pid"
}

# --- ActiveMQ Artemis ----------------------------------------------------------
artemis_pid() { pid_of "$ARTEMIS_DIR/artemis.pid" "$ARTEMIS_INSTANCE"; }
artemis_log() { echo "$ARTEMIS_INSTANCE/log/artemis.log (and $ARTEMIS_DIR/logs/console.log)"; }
artemis_addr() {
  echo "amqp://$HOST:$ARTEMIS_AMQP_PORT, amqps://$HOST:$ARTEMIS_AMQPS_PORT (CA $ARTEMIS_DIR/tls/ca.pem) (core tcp://$HOST:$ARTEMIS_CORE_PORT; $ARTEMIS_ADMIN_USER/$ARTEMIS_ADMIN_PASSWORD, $TEST_USER/$TEST_PASSWORD)"
}
artemis_port() { echo "$ARTEMIS_AMQP_PORT"; }

artemis_create_instance() {
  local stamp="$ARTEMIS_VERSION/$CONFIG_REV.$ARTEMIS_CONFIG_REV"
  if [[ $(cat "$ARTEMIS_INSTANCE/.created-by" 2>/dev/null) == "$stamp" ]]; then
    return 0
  fi
  log "artemis: creating broker instance $ARTEMIS_INSTANCE"
  rm -rf "$ARTEMIS_INSTANCE"
  "$ARTEMIS_HOME/bin/artemis" create "$ARTEMIS_INSTANCE" \
    --user "$ARTEMIS_ADMIN_USER" --password "$ARTEMIS_ADMIN_PASSWORD" --role amq \
    --require-login --silent --no-web --no-autotune --nio \
    --host "$HOST" --default-port "$ARTEMIS_CORE_PORT" --name mediation \
    --no-hornetq-acceptor --no-mqtt-acceptor --no-stomp-acceptor \
    --java-memory 512M >"$ARTEMIS_DIR/logs/create.log" 2>&1 ||
    die "artemis: 'artemis create' failed (see $ARTEMIS_DIR/logs/create.log)"

  # AMQP acceptor: own port, loopback only, queue:// and topic:// prefixes.
  local xml="$ARTEMIS_INSTANCE/etc/broker.xml"
  local amqp="tcp://$HOST:$ARTEMIS_AMQP_PORT?tcpSendBufferSize=1048576;tcpReceiveBufferSize=1048576;protocols=AMQP;useEpoll=true;amqpCredits=1000;amqpLowCredits=300;amqpMinLargeMessageSize=102400;amqpDuplicateDetection=true;anycastPrefix=queue://;multicastPrefix=topic://"
  sed -i -E "s#<acceptor name=\"amqp\">[^<]*</acceptor>#<acceptor name=\"amqp\">$amqp</acceptor>#" "$xml"
  grep -qF ">$amqp<" "$xml" ||
    die "artemis: could not configure the AMQP acceptor in $xml"
  # The same acceptor over TLS, with a certificate from a test CA made once.
  mkdir -p "$ARTEMIS_DIR/logs"
  test_certificates "$ARTEMIS_DIR/tls" "$ARTEMIS_DIR/logs/tls.log"
  local keystore="$ARTEMIS_DIR/tls/server.p12"
  openssl pkcs12 -export -inkey "$ARTEMIS_DIR/tls/server.key" -in "$ARTEMIS_DIR/tls/server.pem" \
    -certfile "$ARTEMIS_DIR/tls/ca.pem" -out "$keystore" -passout "pass:$TEST_PASSWORD" \
    >>"$ARTEMIS_DIR/logs/tls.log" 2>&1 || die "artemis: openssl pkcs12 failed (see $ARTEMIS_DIR/logs/tls.log)"
  local amqps="tcp://$HOST:$ARTEMIS_AMQPS_PORT?sslEnabled=true;keyStoreType=PKCS12;keyStorePath=$keystore;keyStorePassword=$TEST_PASSWORD;protocols=AMQP;useEpoll=true;anycastPrefix=queue://;multicastPrefix=topic://"
  sed -i -E "s#(<acceptor name=\"amqp\">[^<]*</acceptor>)#\1\n         <acceptor name=\"amqps\">$amqps</acceptor>#" "$xml"
  grep -qF ">$amqps<" "$xml" ||
    die "artemis: could not add the AMQP TLS acceptor to $xml"
  grep -qE "<acceptor name=\"artemis\">tcp://$HOST:$ARTEMIS_CORE_PORT\?" "$xml" ||
    die "artemis: core acceptor is not on $HOST:$ARTEMIS_CORE_PORT in $xml"

  # Addresses under `mh-strict.` are not auto-created: sending to or receiving from a
  # missing one is refused with amqp:not-found (the AMQP endpoint's tests need that;
  # everything else keeps Artemis's auto-creation).
  local strict='<address-setting match="mh-strict.#"><auto-create-queues>false</auto-create-queues><auto-create-addresses>false</auto-create-addresses></address-setting>'
  sed -i -E "s|(<address-setting match=\"#\">)|$strict\n         \1|" "$xml"
  grep -qF 'match="mh-strict.#"' "$xml" ||
    die "artemis: could not add the mh-strict address setting to $xml"

  # The machine's disk is shared: Artemis's default stops every producer once the disk is
  # 90 % full, which would fail tests for a reason that is not theirs. -1 turns it off.
  sed -i -E "s#<max-disk-usage>[0-9]+</max-disk-usage>#<max-disk-usage>-1</max-disk-usage>#" "$xml"
  grep -qF '<max-disk-usage>-1</max-disk-usage>' "$xml" ||
    die "artemis: could not turn off max-disk-usage in $xml"

  # Second user (plain text is accepted by the properties login module).
  # (The generated file has no trailing newline.)
  printf '\n%s = %s\n' "$TEST_USER" "$TEST_PASSWORD" >>"$ARTEMIS_INSTANCE/etc/artemis-users.properties"
  sed -i -E "s/^amq[[:space:]]*=[[:space:]]*(.*)$/amq = \1,$TEST_USER/" "$ARTEMIS_INSTANCE/etc/artemis-roles.properties"
  grep -qE "^amq = .*,$TEST_USER$" "$ARTEMIS_INSTANCE/etc/artemis-roles.properties" ||
    die "artemis: could not add $TEST_USER to role amq"
  echo "$stamp" >"$ARTEMIS_INSTANCE/.created-by"
}

artemis_start() {
  artemis_create_instance
  if [[ -n ${BROKERS_FRESH:-} ]]; then rm -rf "$ARTEMIS_INSTANCE/data"; fi
  mkdir -p "$ARTEMIS_INSTANCE/data"
  : >"$ARTEMIS_DIR/logs/console.log"
  launch "$ARTEMIS_DIR/logs/console.log" "$ARTEMIS_INSTANCE/bin/artemis" run
  echo "$LAUNCHED_PID" >"$ARTEMIS_DIR/artemis.pid"
}

artemis_verify() {
  # The acceptors open when the server goes live; require the log line too.
  local deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS < deadline)); do
    grep -qE 'AMQ221007|Server is now (active|live)' "$ARTEMIS_DIR/logs/console.log" && return 0
    sleep 0.5
  done
  return 1
}

artemis_stop() {
  local pid
  pid=$(artemis_pid) || return 0
  stop_pid artemis "$pid" "$ARTEMIS_AMQP_PORT"
  wait_gone "" "$ARTEMIS_CORE_PORT" 10 || true
  rm -f "$ARTEMIS_DIR/artemis.pid"
}

# --- Toxiproxy (the fault tests' proxy) -----------------------------------------
# Not a broker: an HTTP API on TOXIPROXY_PORT through which the fault tests create proxies
# (127.0.0.1 only) in front of the brokers and add toxics (latency, reset, black hole,
# bandwidth) to them. It starts with no proxy; each test makes its own.
toxiproxy_pid() { pid_of "$TOXI_DIR/toxiproxy.pid" "$TOXI_BIN"; }
toxiproxy_log() { echo "$TOXI_DIR/toxiproxy.log"; }
toxiproxy_addr() { echo "http://$HOST:$TOXIPROXY_PORT (Kafka's proxy on $HOST:$TOXIPROXY_KAFKA_PORT)"; }
toxiproxy_port() { echo "$TOXIPROXY_PORT"; }

toxiproxy_start() {
  mkdir -p "$TOXI_DIR"
  : >"$TOXI_DIR/toxiproxy.log"
  launch "$TOXI_DIR/toxiproxy.log" "$TOXI_BIN" -host "$HOST" -port "$TOXIPROXY_PORT"
  echo "$LAUNCHED_PID" >"$TOXI_DIR/toxiproxy.pid"
}
toxiproxy_verify() { :; }

toxiproxy_stop() {
  local pid
  pid=$(toxiproxy_pid) || return 0
  stop_pid toxiproxy "$pid" "$TOXIPROXY_PORT"
  rm -f "$TOXI_DIR/toxiproxy.pid"
}

# --- Commands ------------------------------------------------------------------
parse_names() {
  SELECTED=()
  local n b ok
  if (($# == 0)); then
    SELECTED=("${ALL_BROKERS[@]}")
    return
  fi
  for n in "$@"; do
    ok=""
    for b in "${ALL_BROKERS[@]}"; do [[ $n == "$b" ]] && ok=1; done
    [[ -n $ok ]] || { err "unknown broker '$n' (known: ${ALL_BROKERS[*]})"; usage; }
    [[ " ${SELECTED[*]-} " == *" $n "* ]] || SELECTED+=("$n")
  done
}

lock() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock -w 600 9 || die "another brokers.sh up/down is still running (lock $CACHE/.lock)"
}

cmd_up() {
  local t0=$SECONDS b pid
  lock
  install_prereqs
  for b in "${SELECTED[@]}"; do
    case $b in
      kafka) install_kafka ;;
      artemis) install_artemis ;;
      toxiproxy) install_toxiproxy ;;
    esac
  done

  # Start everything that is not running, then wait for all of them (the JVMs
  # and the Erlang VM boot in parallel).
  declare -A launched=()
  for b in "${SELECTED[@]}"; do
    if pid=$("${b}_pid") && declare -F "${b}_stale" >/dev/null && "${b}_stale"; then
      log "$b: running from an older configuration; restarting it"
      "${b}_stop"
    fi
    if pid=$("${b}_pid"); then
      launched[$b]=$pid
      [[ -z ${BROKERS_FRESH:-} ]] ||
        log "$b: already running, BROKERS_FRESH ignored (run '$0 down $b' first)"
      continue
    fi
    if port_open "$("${b}_port")"; then
      die "$b: port $HOST:$("${b}_port") is already in use by a process this script did not start"
    fi
    log "$b: starting"
    "${b}_start"
    launched[$b]=$LAUNCHED_PID
  done

  local failed=() deadline up
  for b in "${SELECTED[@]}"; do
    deadline=$((SECONDS + TIMEOUT))
    up=""
    while ((SECONDS < deadline)); do
      if "${b}_alive"; then up=1; break; fi
      if ! kill -0 "${launched[$b]}" 2>/dev/null && ! "${b}_pid" >/dev/null; then break; fi
      sleep 0.5
    done
    if [[ -n $up ]] && "${b}_verify"; then
      log "$(printf '%-9s ready  %s' "$b" "$("${b}_addr")")"
    else
      if kill -0 "${launched[$b]}" 2>/dev/null || "${b}_pid" >/dev/null; then
        err "$b did not become ready within ${TIMEOUT}s; see $("${b}_log")"
      else
        err "$b exited during startup; see $("${b}_log")"
        err "  (if its data dir is damaged: $0 down $b && BROKERS_FRESH=1 $0 up $b)"
      fi
      failed+=("$b")
    fi
  done
  ((${#failed[@]} == 0)) || die "failed to start: ${failed[*]}"
  log "up in $((SECONDS - t0))s (cache: $CACHE)"
}

cmd_down() {
  local b rc=0
  lock
  for b in "${SELECTED[@]}"; do
    if "${b}_pid" >/dev/null || port_open "$("${b}_port")"; then
      log "$b: stopping"
      "${b}_stop" || true
      if port_open "$("${b}_port")"; then
        err "$b: port $HOST:$("${b}_port") is still open (held by a process this script did not start?)"
        rc=1
        continue
      fi
    fi
    log "$(printf '%-9s down' "$b")"
  done
  return "$rc"
}

cmd_status() {
  local b rc=0
  for b in "${SELECTED[@]}"; do
    if "${b}_alive"; then
      log "$(printf '%-9s up     %s' "$b" "$("${b}_addr")")"
    else
      log "$(printf '%-9s down   (%s)' "$b" "$("${b}_addr" | cut -d' ' -f1)")"
      rc=1
    fi
  done
  return "$rc"
}

main() {
  (($# >= 1)) || usage
  local cmd=$1
  shift
  parse_names "$@"
  case $cmd in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) usage ;;
  esac
}

main "$@"
