//! `make cluster-up` / `make cluster-down` on a second cluster (own ports and state folder),
//! so the shared cluster the other tests use stays up: down leaves no process or port behind.

mod support;

use std::net::TcpStream;
use std::process::Command;

/// Below Linux's ephemeral range (32768–60999): a port there can be held, at any moment, by the
/// client end of one of the many loopback connections of the suite, and etcd then fails to bind.
/// Apart from the shared cluster's ports (tests/cluster/ports.env).
const PORTS: [(&str, u16); 6] = [
    ("ETCD_CLIENT_PORT", 24790),
    ("ETCD_PEER_PORT", 24800),
    ("APISERVER_PORT", 27443),
    ("CONTROLLER_MANAGER_PORT", 21257),
    ("SCHEDULER_PORT", 21259),
    ("KWOK_PORT", 21247),
];

fn cluster_script(script: &str, state: &std::path::Path) -> std::process::Output {
    let mut command = Command::new(support::repo().join("tests/cluster").join(script));
    command.env("HUBGRADE_CLUSTER_DIR", state);
    for (name, port) in PORTS {
        command.env(name, port.to_string());
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"))
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn cluster_down_stops_every_process_and_frees_every_port() {
    let state = support::repo().join("target/cluster-lifecycle-test");
    let _ = cluster_script("down.sh", &state);

    let up = cluster_script("up.sh", &state);
    assert!(
        up.status.success(),
        "up.sh failed:\n{}",
        support::stderr(&up)
    );
    let pids: Vec<(u32, String)> = support::read(&state.join("pids"))
        .lines()
        .map(|line| {
            let (pid, name) = line.split_once(' ').expect("pid and name");
            (pid.parse().expect("pid"), name.to_string())
        })
        .collect();
    let names: Vec<&str> = pids.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok"
        ]
    );
    for (pid, name) in &pids {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{name} is not running"
        );
    }
    for (name, port) in PORTS {
        if name != "ETCD_PEER_PORT" {
            assert!(
                listening(port),
                "{name} {port} is not listening after up.sh"
            );
        }
    }
    let version = Command::new(support::cluster_bin().join("kubectl"))
        .args([
            "--kubeconfig",
            state.join("kubeconfig").to_str().expect("utf-8 path"),
        ])
        .args(["get", "--raw", "/version"])
        .output()
        .expect("kubectl");
    assert!(String::from_utf8_lossy(&version.stdout).contains(&support::pinned("K8S_VERSION")));

    let down = cluster_script("down.sh", &state);
    assert!(
        down.status.success(),
        "down.sh failed:\n{}",
        support::stderr(&down)
    );
    for (pid, name) in &pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // A zombie (state Z) is already dead, waiting for its parent to reap it.
        let alive = !stat.is_empty() && !stat.contains(") Z ");
        assert!(!alive, "{name} ({pid}) is still running after down.sh");
    }
    let leftovers = Command::new("pgrep")
        .args(["-f", state.to_str().expect("utf-8 path")])
        .output()
        .expect("pgrep");
    assert!(
        leftovers.stdout.is_empty(),
        "processes of the stopped cluster remain: {}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
    for (name, port) in PORTS {
        assert!(
            !listening(port),
            "{name} {port} is still bound after down.sh"
        );
    }
}
