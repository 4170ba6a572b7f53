//! Argo CD's view of a HubUpgrade: `charts/hubgrade/argocd/health.lua` run by a real Lua 5.1
//! interpreter (Argo CD's gopher-lua is a Lua 5.1), as Argo CD runs it.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

pub const HEALTH_LUA: &str = "charts/hubgrade/argocd/health.lua";

#[derive(Debug)]
pub struct Health {
    pub status: String,
    pub message: String,
}

/// What the Argo CD health check says for `object`, run as Argo CD runs it: the object in the
/// global `obj`, the script's chunk returning `hs`.
pub fn argocd_health(object: &Value) -> Health {
    let driver = format!(
        "obj = {}\nlocal hs = dofile({})\nio.write(hs.status, \"\\n\", hs.message or \"\")\n",
        lua_literal(object),
        lua_string(&super::repo().join(HEALTH_LUA).to_string_lossy()),
    );
    let mut lua = Command::new("lua5.1");
    lua.arg("-");
    let install = "install Debian's package lua5.1 (make deps runs tests/install-deps.sh)";
    let output = String::from_utf8(run_with_stdin(lua, driver.as_bytes(), install)).expect("utf-8");
    let (status, message) = output.split_once('\n').expect("status and message");
    Health {
        status: status.into(),
        message: message.into(),
    }
}

/// Runs `command` with `input` on stdin and returns its stdout; a failure fails the test, and a
/// missing program fails it with `install`, what to install.
pub fn run_with_stdin(mut command: Command, input: &[u8], install: &str) -> Vec<u8> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {install}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    assert!(
        output.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `value` as a Lua table constructor, as Argo CD hands the object to the script.
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(key, value)| format!("[{}] = {}", lua_string(key), lua_literal(value)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

fn lua_string(text: &str) -> String {
    let mut quoted = String::from("\"");
    for c in text.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            c if (c as u32) < 0x20 => quoted.push_str(&format!("\\{:03}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}
