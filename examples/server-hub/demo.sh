#!/usr/bin/env bash
# A hub on PostgreSQL or MySQL/MariaDB upgraded end to end on the local cluster, shown live:
#   examples/server-hub/demo.sh postgres      (default)
#   examples/server-hub/demo.sh mysql
# A private database server on 127.0.0.1 (Debian's PostgreSQL or MariaDB, as the tests start
# them), the hub's database made by JupyterHub 4.1.6 itself, the z2jh-shaped hub of hub.yaml on
# the KWOK nodes (the agent stand-in plays the Jobs with hubgrade's own agent code against the
# real server; the migration is a stand-in that really changes the database), the operator,
# and examples/server-hub/upgrade.yaml. Exits 0 only if the upgrade Succeeded and the clone
# backup is on the server.
set -euo pipefail
kind="${1:-postgres}"
case "$kind" in postgres | mysql) ;; *) echo "usage: $0 [postgres|mysql]" >&2; exit 2 ;; esac
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ns="jhub-$kind"
demo="$repo/target/demo/$ns"
password="demo-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

tests/install-deps.sh >/dev/null
say "starting the local cluster (built on first use)"
tests/cluster/up.sh
bin="$(tests/cluster/build.sh)"
export PATH="$bin:$PATH" KUBECONFIG="$repo/target/cluster/kubeconfig"
say "building hubgrade and JupyterHub 4.1.6 (cached)"
cargo build --locked --quiet --workspace --bins
venv="$(tests/jupyterhub/venvs.sh)/jupyterhub-4.1.6"

pids=()
server_dir="$(mktemp -d /tmp/hubgrade-demo-"$kind".XXXXXX)"
stop_server() { :; }
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # A server still shutting down writes into its data directory: wait for it.
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  stop_server
  rm -rf "$server_dir"
}
trap cleanup EXIT
port="$(free_port)"
if [[ "$kind" == postgres ]]; then
  say "starting PostgreSQL on 127.0.0.1:$port"
  pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  printf '%s' "$password" > "$server_dir/pw"
  chown -R postgres:postgres "$server_dir"
  runuser -u postgres -- "$pgbin/initdb" -D "$server_dir/data" -U hubgrade \
    --auth=scram-sha-256 -E UTF8 --pwfile="$server_dir/pw" >/dev/null
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$server_dir/data" -l "$server_dir/log" -w \
    -o "-p $port -k $server_dir -c listen_addresses=127.0.0.1" start >/dev/null
  stop_server() { runuser -u postgres -- "$pgbin/pg_ctl" -D "$server_dir/data" -m fast stop >/dev/null 2>&1 || true; }
  sql() { PGPASSWORD="$password" psql -h 127.0.0.1 -p "$port" -U hubgrade -d postgres -Atc "$1"; }
  sql "CREATE DATABASE jupyterhub" >/dev/null
  db_url="postgresql://hubgrade@127.0.0.1:$port/jupyterhub"
  full_url="postgresql+psycopg2://hubgrade:$password@127.0.0.1:$port/jupyterhub"
  # z2jh: hub.db.password, exported as PGPASSWORD by the hub's configuration.
  password_line="  hub.db.password: \"$password\""
  databases() { sql "SELECT datname FROM pg_database ORDER BY 1"; }
else
  say "starting MariaDB on 127.0.0.1:$port"
  mkdir -p "$server_dir/data" "$server_dir/tmp"
  chown -R mysql:mysql "$server_dir"
  mariadb-install-db --no-defaults --user=mysql --auth-root-authentication-method=normal \
    --skip-test-db --datadir="$server_dir/data" --tmpdir="$server_dir/tmp" >/dev/null
  mariadbd --no-defaults --user=mysql --bind-address=127.0.0.1 --skip-log-bin \
    --datadir="$server_dir/data" --tmpdir="$server_dir/tmp" --port="$port" \
    --socket="$server_dir/mysqld.sock" --pid-file="$server_dir/mysqld.pid" \
    --log-error="$server_dir/error.log" >/dev/null 2>&1 &
  pids+=($!)
  root() { mariadb --no-defaults -uroot --socket="$server_dir/mysqld.sock" "$@"; }
  for _ in $(seq 1 150); do root -e "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
  root -e "CREATE DATABASE jupyterhub; CREATE USER 'hubgrade'@'%' IDENTIFIED BY '$password'; GRANT ALL ON *.* TO 'hubgrade'@'%';"
  # z2jh MySQL hubs keep the password in hub.db.url: PyMySQL does not read MYSQL_PWD.
  db_url="mysql+pymysql://hubgrade:$password@127.0.0.1:$port/jupyterhub"
  full_url="$db_url"
  password_line=""
  databases() { root -N -e "SHOW DATABASES"; }
fi
"$venv/bin/python" tests/jupyterhub/make_db.py "$full_url"

say "installing the HubUpgrade CRD and the operator's RBAC (namespace $ns)"
kubectl apply -f crds/hubupgrade.yaml >/dev/null
kubectl wait --for=condition=Established crd/hubupgrades.hubgrade.io --timeout=30s >/dev/null
if kubectl get namespace "$ns" >/dev/null 2>&1; then
  for upgrade in $(kubectl get hubupgrades -n "$ns" -o name); do
    kubectl patch -n "$ns" "$upgrade" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null
  done
  kubectl delete namespace "$ns" --wait=true --timeout=120s >/dev/null
fi
kubectl create namespace "$ns" >/dev/null
helm template hubgrade charts/hubgrade --namespace "$ns" --set watchNamespace="$ns" \
  --show-only templates/rbac.yaml | kubectl apply -f - >/dev/null
mkdir -p "$demo"
token="$(kubectl create token hubgrade -n "$ns" --duration=1h)"
server="$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.server}')"
ca="$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority}')"
cat > "$demo/operator.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$server", certificate-authority: "$ca"}}]
users: [{name: hubgrade, user: {token: "$token"}}]
contexts: [{name: hubgrade, context: {cluster: local, user: hubgrade}}]
current-context: hubgrade
KC

say "creating the hub (k8s-hub 4.1.0, hub.db.type $kind)"
sed -e "s|@DB_TYPE@|$kind|" -e "s|@DB_URL@|$db_url|" -e "s|^@DB_PASSWORD_LINE@$|$password_line|" \
  examples/server-hub/hub.yaml | kubectl apply -n "$ns" -f - >/dev/null
kubectl wait -n "$ns" --for=condition=Available deployment/hub --timeout=60s >/dev/null

say "starting the operator (logs: target/demo/$ns/operator.log)"
KUBECONFIG="$demo/operator.kubeconfig" target/debug/hubgrade run --namespace "$ns" \
  --metrics-address 127.0.0.1:0 --lease-seconds 5 >"$demo/operator.log" 2>&1 &
pids+=($!)
target/debug/kwok-agent-standin --namespace "$ns" --volumes "$demo/volumes" >"$demo/standin.log" 2>&1 &
pids+=($!)

say "applying the HubUpgrade (examples/server-hub/upgrade.yaml)"
kubectl apply -n "$ns" -f examples/server-hub/upgrade.yaml >/dev/null
last="" phase=""
for _ in $(seq 1 360); do
  line="$(kubectl get hubupgrade hub-to-4-2-0 -n "$ns" -o jsonpath='{.status.phase}{"\t"}{.status.message}' 2>/dev/null || true)"
  phase="${line%%$'\t'*}"
  if [[ "$line" != "$last" && -n "$phase" ]]; then
    printf '%s  %-12s %s\n' "$(date +%H:%M:%S)" "$phase" "${line#*$'\t'}"
    last="$line"
  fi
  case "$phase" in Succeeded|RolledBack|Failed) break ;; esac
  sleep 0.5
done

say "result"
kubectl get hubupgrade -n "$ns"
reference="$(kubectl get hubupgrade hub-to-4-2-0 -n "$ns" -o jsonpath='{.status.backup.reference}')"
kubectl get hubupgrade hub-to-4-2-0 -n "$ns" -o json | jq -r '
  .status as $s
  | "phase:     \($s.phase)",
    "to:        \($s.to.image)",
    "backup:    \($s.backup.method) \($s.backup.reference) (\($s.backup.sizeBytes) bytes)",
    "timeline:",
    ($s.steps[] | "  \(.name)\t\(.outcome // "")\t\(.message // "")")'
echo "databases on the server: $(databases | tr '\n' ' ')"
if grep -q "$password" "$demo/operator.log" "$demo/standin.log"; then
  echo "the password appears in a log" >&2
  exit 1
fi
[[ "$phase" == "Succeeded" ]] && databases | grep -qx "$reference"
