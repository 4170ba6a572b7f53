//! Runs the containers of a Job hubgrade builds on this machine, in order (init containers
//! first), with real programs: `hubgrade agent` is this build's binary, `jupyterhub` a real
//! JupyterHub release from the test venvs standing for the target image. Paths the pod would
//! see are mapped to local folders, so the Job's own arguments decide what each step touches,
//! exactly as in a pod.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::batch::v1::Job;

use super::jupyterhub::venv;

/// How the pod's paths map to this machine's, and which JupyterHub plays the target image.
pub struct LocalPod {
    /// (path in the pod, local folder), longest first is not required: each prefix is distinct.
    pub paths: Vec<(String, PathBuf)>,
    /// The JupyterHub release standing for the target image.
    pub jupyterhub: &'static str,
    /// The image's WORKDIR, used when the container sets no working directory.
    pub image_workdir: String,
}

/// One container's run.
pub struct Ran {
    pub container: String,
    pub output: Output,
}

impl LocalPod {
    fn local(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (pod, local) in &self.paths {
            text = text.replace(pod.as_str(), &local.display().to_string());
        }
        text
    }

    /// Runs the Job's containers until one fails; returns each run.
    pub fn run(&self, job: &Job) -> Vec<Ran> {
        let pod = job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.clone())
            .expect("a pod template");
        let bin = venv(self.jupyterhub).join("bin");
        let search_path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut runs = Vec::new();
        for container in pod
            .init_containers
            .iter()
            .flatten()
            .chain(pod.containers.iter())
        {
            let words: Vec<String> = container
                .command
                .iter()
                .flatten()
                .chain(container.args.iter().flatten())
                .map(|w| self.local(w))
                .collect();
            let (program, args): (PathBuf, &[String]) = match words.first().map(String::as_str) {
                Some("hubgrade") => (env!("CARGO_BIN_EXE_hubgrade").into(), &words[1..]),
                Some("jupyterhub") => (bin.join("jupyterhub"), &words[1..]),
                other => panic!("no local stand-in for the command {other:?}"),
            };
            let workdir = self.local(
                container
                    .working_dir
                    .as_deref()
                    .unwrap_or(&self.image_workdir),
            );
            let mut command = Command::new(program);
            command
                .args(args)
                .current_dir(Path::new(&workdir))
                .env("PATH", &search_path);
            for variable in container.env.iter().flatten() {
                if let Some(value) = &variable.value {
                    command.env(&variable.name, value);
                }
            }
            let output = command.output().expect("running a container's command");
            let failed = !output.status.success();
            runs.push(Ran {
                container: container.name.clone(),
                output,
            });
            if failed {
                break;
            }
        }
        runs
    }
}
