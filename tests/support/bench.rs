//! What the benches (benches/*.rs) say about the machine they ran on.

use std::error::Error;
use std::fs;

use kube::Client;

pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub kubernetes: String,
    pub date: String,
    pub load_at_start: String,
}

impl Machine {
    pub async fn describe(client: &Client) -> Result<Machine, Box<dyn Error>> {
        let cpu_info = fs::read_to_string("/proc/cpuinfo")?;
        let mem_info = fs::read_to_string("/proc/meminfo")?;
        let memory_kib: f64 = mem_info
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0);
        let kubernetes = client
            .apiserver_version()
            .await
            .map(|v| v.git_version)
            .unwrap_or_default();
        Ok(Machine {
            cpus: cpu_info
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count(),
            cpu_model: cpu_info
                .lines()
                .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
                .unwrap_or("unknown")
                .trim()
                .to_string(),
            memory_gib: memory_kib / 1024.0 / 1024.0,
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")?
                .trim()
                .to_string(),
            kubernetes,
            date: jiff::Zoned::now()
                .strftime("%a %b %e %H:%M:%S %Z %Y")
                .to_string(),
            load_at_start: load_average(),
        })
    }

    /// The report's "Machine" section; `cluster` says what the hubs ran on.
    pub fn section(&self, cluster: &str) -> String {
        format!(
            "## Machine\n\n\
             - CPUs: {} ({})\n\
             - Memory: {:.1} GiB\n\
             - Kernel: {}\n\
             - Cluster: the local test cluster (`make cluster-up`), Kubernetes {}, {cluster}\n\
             - Load average when the bench started: {}, when it wrote this: {} (the machine and \
             the cluster are shared with other builds and tests)\n\n",
            self.cpus,
            self.cpu_model,
            self.memory_gib,
            self.kernel,
            self.kubernetes,
            self.load_at_start,
            load_average()
        )
    }
}

/// The load averages (1, 5, 15 minutes) now.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
