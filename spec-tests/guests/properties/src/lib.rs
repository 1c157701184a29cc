//! `guest_properties`: `proxy_get_property` / `proxy_set_property`
//! (ABI reference §4.6, §5.2, §10).
//!
//! The root context logs the VM and plugin configurations and the `plugin_*`
//! properties. Each request reads a fixed list of properties in
//! `on_http_request_headers`, sets `guest_property` and reads it back, and
//! echoes everything as `x-prop-*` response headers. The raw status of a
//! missing property is logged too. Contract: `spec-tests/guests/README.md`.

use log::info;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(PropsRoot) });
}}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    /// Raw `proxy_get_property`, to log the status the SDK hides.
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
}

/// Calls `proxy_get_property` directly; returns `(status, value)`.
fn raw_get_property(path: &[&str]) -> (u32, Vec<u8>) {
    let serialized = path.join("\0");
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the path slice lives for the call; `data`/`size` are valid
    // out-parameters.
    let status =
        unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) };
    let value = if status == 0 && !data.is_null() {
        // SAFETY: on success the host allocated exactly `size` bytes through
        // proxy_on_memory_allocate (a Vec<u8> of capacity `size`) and hands
        // ownership to us (§5.3).
        unsafe { Vec::from_raw_parts(data, size, size) }
    } else {
        Vec::new()
    };
    (status, value)
}

/// Formats a property value: UTF-8 text as is, anything else as `hex:<hex>`;
/// NOT_FOUND / empty as `<none>`, other errors as `error:<Status>`.
fn show(value: Result<Option<Vec<u8>>, proxy_wasm::types::Status>) -> String {
    match value {
        Ok(Some(bytes)) => match String::from_utf8(bytes) {
            Ok(s) if !s.chars().any(char::is_control) => s,
            Ok(s) => hex(s.as_bytes()),
            Err(e) => hex(e.as_bytes()),
        },
        Ok(None) => "<none>".to_owned(),
        Err(status) => format!("error:{status:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::from("hex:");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// An 8-byte little-endian integer property as decimal, else `show`.
fn show_int(value: Result<Option<Vec<u8>>, proxy_wasm::types::Status>) -> String {
    match value {
        Ok(Some(bytes)) if bytes.len() == 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes);
            i64::from_le_bytes(b).to_string()
        }
        other => show(other),
    }
}

struct PropsRoot;

impl Context for PropsRoot {}

impl RootContext for PropsRoot {
    fn on_vm_start(&mut self, vm_configuration_size: usize) -> bool {
        let vm_config = self
            .get_vm_configuration()
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .unwrap_or_default();
        info!(
            "properties: vm_configuration_size={vm_configuration_size} vm_configuration={vm_config}"
        );
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let config = self
            .get_plugin_configuration()
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .unwrap_or_default();
        info!(
            "properties: plugin_configuration_size={plugin_configuration_size} plugin_configuration={config}"
        );
        for name in ["plugin_name", "plugin_root_id", "plugin_vm_id"] {
            info!(
                "properties: root {name}={}",
                show(hostcalls::get_property(vec![name]))
            );
        }
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Props { echo: Vec::new() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Props {
    echo: Vec<(&'static str, String)>,
}

impl Context for Props {}

impl HttpContext for Props {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let text: [(&'static str, Vec<&str>); 8] = [
            ("x-prop-plugin-name", vec!["plugin_name"]),
            ("x-prop-plugin-root-id", vec!["plugin_root_id"]),
            ("x-prop-plugin-vm-id", vec!["plugin_vm_id"]),
            ("x-prop-source-address", vec!["source", "address"]),
            ("x-prop-request-path", vec!["request", "path"]),
            ("x-prop-request-method", vec!["request", "method"]),
            (
                "x-prop-request-header",
                vec!["request", "headers", "x-prop"],
            ),
            ("x-prop-missing", vec!["does", "not", "exist"]),
        ];
        for (header, path) in text {
            let value = show(hostcalls::get_property(path.clone()));
            info!("properties: {}={value}", path.join("."));
            self.echo.push((header, value));
        }
        let port = show_int(hostcalls::get_property(vec!["source", "port"]));
        info!("properties: source.port={port}");
        self.echo.push(("x-prop-source-port", port));

        let (status, value) = raw_get_property(&["does", "not", "exist"]);
        info!(
            "properties: raw does.not.exist status={status} size={}",
            value.len()
        );
        self.echo
            .push(("x-prop-missing-status", status.to_string()));

        let to_set = self
            .get_http_request_header("x-set-prop")
            .unwrap_or_else(|| "set-by-guest".to_owned());
        self.set_property(vec!["guest_property"], Some(to_set.as_bytes()));
        let back = show(hostcalls::get_property(vec!["guest_property"]));
        info!("properties: set guest_property={to_set} read back={back}");
        self.echo.push(("x-prop-roundtrip", back));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.echo) {
            self.add_http_response_header(name, &value);
        }
        Action::Continue
    }
}
