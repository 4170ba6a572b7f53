//! The committed CRD is exactly what the code generates (regenerate with `make crd`), and so is
//! the chart's copy (Helm installs CRDs only from the chart's own `crds/` folder).

#[test]
fn committed_crd_matches_the_code() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/hubupgrade.yaml"))
            .expect("reading crds/hubupgrade.yaml");
    let generated = hubgrade::api::crd_yaml().expect("rendering the CRD");
    assert!(
        committed == generated,
        "crds/hubupgrade.yaml differs from the CRD the code generates; run `make crd` and commit it"
    );
}

#[test]
fn chart_crd_matches_the_code() {
    let in_chart = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/hubgrade/crds/hubupgrade.yaml"
    ))
    .expect("reading charts/hubgrade/crds/hubupgrade.yaml");
    let generated = hubgrade::api::crd_yaml().expect("rendering the CRD");
    assert!(
        in_chart == generated,
        "charts/hubgrade/crds/hubupgrade.yaml differs from the CRD the code generates; run `make crd` and commit it"
    );
}

#[test]
fn hubgrade_crd_prints_the_committed_crd() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hubgrade"))
        .arg("crd")
        .output()
        .expect("running hubgrade crd");
    assert!(output.status.success());
    let committed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/hubupgrade.yaml"))
        .expect("reading crds/hubupgrade.yaml");
    assert!(
        output.stdout == committed,
        "`hubgrade crd | diff - crds/hubupgrade.yaml` is not empty"
    );
}

#[test]
fn hubgrade_version_and_help_answer() {
    let version = std::process::Command::new(env!("CARGO_BIN_EXE_hubgrade"))
        .arg("version")
        .output()
        .expect("running hubgrade version");
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("hubgrade {}", env!("CARGO_PKG_VERSION"))
    );
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_hubgrade"))
        .arg("--help")
        .output()
        .expect("running hubgrade --help");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success());
    assert!(text.contains("crd") && text.contains("version"), "{text}");
}
