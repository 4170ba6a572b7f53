//! Chaos on the local cluster: a control-plane process (etcd, kube-apiserver) stopped and
//! started again with the same command line, as a node reboot or a crash-looping static pod
//! does. The cluster's `pids` file is kept up to date, so `make cluster-down` stops the new
//! process too.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The processes a restart started: this test process is their parent, so it must reap them
/// when they stop (else they linger as zombies, which still "exist").
static STARTED: Mutex<Vec<Child>> = Mutex::new(Vec::new());

fn state_dir() -> PathBuf {
    std::env::var_os("HUBGRADE_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::repo().join("target/cluster"))
}

/// The pid of the cluster's process `name`, from the `pids` file up.sh writes.
fn pid_of(name: &str) -> u32 {
    let pids = std::fs::read_to_string(state_dir().join("pids")).expect("target/cluster/pids");
    pids.lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, n)| *n == name)
        .filter_map(|(pid, _)| pid.parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no {name} in target/cluster/pids: is the cluster up?"))
}

/// Each process's command, as last seen running: one that died on its own (a controller that
/// could not reach the API server while starting) is started again with it.
static COMMANDS: Mutex<Vec<(String, PathBuf, Vec<String>)>> = Mutex::new(Vec::new());

fn command_of(name: &str, pid: u32) -> (PathBuf, Vec<String>) {
    let mut commands = COMMANDS.lock().expect("the commands");
    let running = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .zip(std::fs::read_link(format!("/proc/{pid}/exe")).ok());
    if let Some((cmdline, program)) = running.filter(|(c, _)| !c.is_empty()) {
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        commands.retain(|(n, _, _)| n != name);
        commands.push((name.to_string(), program.clone(), argv.clone()));
        return (program, argv);
    }
    commands
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, program, argv)| (program.clone(), argv.clone()))
        .unwrap_or_else(|| panic!("{name} ({pid}) is not running and was never seen running"))
}

/// [`restart`] for a process that serves on `port` of 127.0.0.1 once it has started (the
/// controller-manager, the scheduler, KWOK): started again until it listens there, since it
/// exits when the API server is away while it starts.
pub fn restart_until_listening(name: &str, port: u16) {
    for _ in 0..5 {
        restart(name);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if !alive(pid_of(name)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    panic!("{name} did not listen on 127.0.0.1:{port} after five starts");
}

/// The port of the cluster's `variable` in tests/cluster/ports.env, or from the environment
/// (a cluster of its own sets them).
pub fn port(variable: &str) -> u16 {
    if let Some(port) = std::env::var(variable).ok().and_then(|p| p.parse().ok()) {
        return port;
    }
    let text = std::fs::read_to_string(super::repo().join("tests/cluster/ports.env"))
        .expect("tests/cluster/ports.env");
    text.lines()
        .find_map(|line| {
            let rest = line.trim().strip_prefix(&format!(": \"${{{variable}:="))?;
            rest.split('}').next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("{variable} is not in tests/cluster/ports.env"))
}

fn alive(pid: u32) -> bool {
    let mut started = STARTED.lock().expect("the started processes");
    if let Some(i) = started.iter().position(|child| child.id() == pid) {
        let exited = started[i].try_wait().ok().flatten().is_some();
        if exited {
            // Reaped by try_wait; wait() only returns its status again.
            let _ = started.remove(i).wait();
        }
        return !exited;
    }
    // SAFETY: signal 0 only asks whether the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// Stops the cluster's process `name` (SIGTERM, then SIGKILL after 10 s) and starts it again
/// with the same arguments, its output appended to the same log; waits until the API server
/// answers `/readyz` again. Returns how long the API was away.
pub fn restart(name: &str) -> Duration {
    let pid = pid_of(name);
    let (program, argv) = command_of(name, pid);
    let started = Instant::now();
    // SAFETY: signals to a process of the test cluster, found by its recorded pid.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    while alive(pid) {
        if started.elapsed() > Duration::from_secs(10) {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(state_dir().join(format!("logs/{name}.log")))
        .expect("the process's log");
    // `setsid`, as up.sh starts it: the process outlives this test, in a session of its own.
    let child = Command::new("setsid")
        .arg(&program)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name} again: {e}"));
    let new_pid = child.id();
    STARTED.lock().expect("the started processes").push(child);
    let pids = std::fs::read_to_string(state_dir().join("pids")).expect("pids");
    let updated: String = pids
        .lines()
        .map(|line| {
            if line == format!("{pid} {name}") {
                format!("{new_pid} {name}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(state_dir().join("pids"), updated).expect("updating pids");
    wait_until_ready(Duration::from_secs(120));
    started.elapsed()
}

/// Waits until the API server answers `/readyz` (etcd included).
pub fn wait_until_ready(limit: Duration) {
    let start = Instant::now();
    loop {
        let ready = super::kubectl(&["get", "--raw", "/readyz", "--request-timeout=2s"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ready {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "the API server is not ready {limit:?} after a restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
