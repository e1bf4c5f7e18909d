//! Device templates: the TOML file `device new --template` reads. `[devinfo]` and `[devdetail]`
//! give the values written into the tree when the device is created, `[behaviour]` the per-device
//! settings CSPs read ([`Settings`]), and an optional top-level `profile` the default profile.
//!
//! ```toml
//! profile = "win10"
//! [devinfo]
//! Man = "Dell Inc."
//! Mod = "Latitude 7440"
//! [devdetail]
//! SwV = "10.0.22631.4460"
//! [devdetail.Ext.Microsoft]          # or "Ext/Microsoft/DeviceName" = "..."
//! DeviceName = "LAPTOP-4F7H2K9Q"
//! [behaviour]
//! utc_offset_minutes = 60
//! entapp_install_secs = 30                                  # EnterpriseAppManagement settings
//! "entapp_sha256:{B316008A-141D-4A79-810F-8B764C4CFDFB}" = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//!
//! [[apps]]                         # an app already installed (EnterpriseAppManagement Inventory)
//! enterprise_id = "4000000001"
//! product_id = "{B0322158-C3C2-44EB-8A31-D14A9FEC450E}"   # or %7B...%7D
//! version = "1.0.0.0"
//! title = "Contoso Expenses"
//! publisher = "Contoso Ltd."
//! install_date = 2025-10-30T21:09:52Z                       # optional: the device's creation
//!
//! [wmi]                            # optional WMI bridge inventory (csp::wmi_bridge::template_settings)
//! domain = "CONTOSO"
//! ```
//!
//! Owns parsing and checking (every key must be a node of the DevInfo/DevDetail tables, values
//! must fit the node's format; `entapp_*` behaviour keys must be settings the
//! EnterpriseAppManagement CSP reads, with values of the right kind; `[[apps]]` entries need
//! every field but `install_date`; `[wmi]` is checked by the WMI bridge and kept with the
//! settings under `wmi.*` keys). A file only needs what differs from the built-in defaults
//! ([`Template::builtin`]); reading the file is the caller's job.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use percent_encoding::percent_decode_str;

use crate::csp::devinfo::{DevDetail, DevInfo};
use crate::tree::{Csp, Format, NodeSpec, Profile, Settings};

/// A parsed, checked device template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    /// The profile the template is for, when it says.
    pub profile: Option<Profile>,
    /// `./DevInfo/<name>` values.
    pub devinfo: BTreeMap<String, String>,
    /// `./DevDetail/<path>` values (paths relative to DevDetail).
    pub devdetail: BTreeMap<String, String>,
    /// The `[behaviour]` table.
    pub behaviour: Settings,
    /// The `[[apps]]` entries: apps installed before the device is managed.
    pub apps: Vec<TemplateApp>,
}

/// One `[[apps]]` entry: an app in the EnterpriseAppManagement inventory of `enterprise_id`
/// from the start (`csp::enterprise_app::preinstall` puts it there when the device is created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateApp {
    /// The EnterpriseID it belongs to (`4000000001` in the seed).
    pub enterprise_id: String,
    /// The product ID, decoded and in braces (`{B0322158-C3C2-44EB-8A31-D14A9FEC450E}`).
    pub product_id: String,
    pub version: String,
    pub title: String,
    pub publisher: String,
    /// When it was installed; `None` means when the device is created.
    pub install_date: Option<DateTime<Utc>>,
}

/// A template that cannot be used: where (file, table, key) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct TemplateError {
    /// The file name (or `built-in`).
    pub origin: String,
    pub message: String,
}

impl Template {
    /// The defaults every device starts from: a Windows 11 laptop for `win10`, a Surface-class
    /// tablet for `win81` (values shaped like PROTOCOL.md §5 and the real captures).
    pub fn builtin(profile: Profile) -> Template {
        let text = match profile {
            Profile::Win10 => BUILTIN_WIN10,
            Profile::Win81 => BUILTIN_WIN81,
        };
        // The built-in texts are checked by a test; an error here is a programming error.
        Template::parse(text, "built-in").unwrap_or_default()
    }

    /// Parses and checks a template. `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Template, TemplateError> {
        let err = |message: String| TemplateError { origin: origin.to_string(), message };
        let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| err(e.to_string().trim_end().to_string()))?;
        let mut t = Template::default();
        for (key, value) in doc {
            match (key.as_str(), value) {
                ("profile", toml::Value::String(p)) => {
                    t.profile = Some(match p.as_str() {
                        "win10" => Profile::Win10,
                        "win81" => Profile::Win81,
                        other => return Err(err(format!("profile {other:?} is not win10 or win81"))),
                    })
                }
                ("devinfo", toml::Value::Table(tab)) => {
                    for (path, v) in flatten(&tab, "devinfo").map_err(err)? {
                        if path == "DevId" {
                            return Err(err("[devinfo] DevId is the device id: use --id instead".into()));
                        }
                        check_node(DevInfo.schema(), "devinfo", &path, &v).map_err(err)?;
                        t.devinfo.insert(path, v);
                    }
                }
                ("devdetail", toml::Value::Table(tab)) => {
                    for (path, v) in flatten(&tab, "devdetail").map_err(err)? {
                        check_node(DevDetail.schema(), "devdetail", &path, &v).map_err(err)?;
                        t.devdetail.insert(path, v);
                    }
                }
                ("behaviour", toml::Value::Table(tab)) => {
                    for (k, v) in flatten(&tab, "behaviour").map_err(err)? {
                        check_entapp_setting(&k, &v).map_err(err)?;
                        t.behaviour.0.insert(k, v);
                    }
                }
                ("apps", toml::Value::Array(entries)) => {
                    for (i, entry) in entries.iter().enumerate() {
                        let app = parse_app(entry, i + 1).map_err(err)?;
                        if t.apps.iter().any(|a| {
                            a.enterprise_id == app.enterprise_id && a.product_id.eq_ignore_ascii_case(&app.product_id)
                        }) {
                            return Err(err(format!(
                                "[[apps]] #{}: product_id {} is listed twice for enterprise {}",
                                i + 1,
                                app.product_id,
                                app.enterprise_id
                            )));
                        }
                        t.apps.push(app);
                    }
                }
                ("apps", _) => return Err(err("apps must be an array of tables ([[apps]])".into())),
                // WMI bridge inventory: checked by the CSP, carried as `wmi.*` settings.
                ("wmi", toml::Value::Table(tab)) => {
                    t.behaviour.0.extend(crate::csp::wmi_bridge::template_settings(&tab).map_err(err)?);
                }
                (other, _) => {
                    return Err(err(format!(
                        "unexpected key {other:?} (expected profile, [devinfo], [devdetail], [behaviour], [[apps]], [wmi])"
                    )));
                }
            }
        }
        Ok(t)
    }

    /// `self` with the values of `over` laid on top.
    pub fn overlay(mut self, over: &Template) -> Template {
        if over.profile.is_some() {
            self.profile = over.profile;
        }
        self.devinfo.extend(over.devinfo.clone());
        self.devdetail.extend(over.devdetail.clone());
        self.behaviour.0.extend(over.behaviour.0.clone());
        for app in &over.apps {
            self.apps.retain(|a| {
                !(a.enterprise_id == app.enterprise_id && a.product_id.eq_ignore_ascii_case(&app.product_id))
            });
            self.apps.push(app.clone());
        }
        self
    }
}

/// Parses one `[[apps]]` entry (`n` counts from 1, for the error).
fn parse_app(entry: &toml::Value, n: usize) -> Result<TemplateApp, String> {
    let at = format!("[[apps]] #{n}");
    let toml::Value::Table(tab) = entry else { return Err(format!("{at}: must be a table")) };
    const KEYS: [&str; 6] = ["enterprise_id", "product_id", "version", "title", "publisher", "install_date"];
    if let Some(k) = tab.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("{at}: unexpected key {k:?} (expected {})", KEYS.join(", ")));
    }
    let text = |key: &str| -> Result<String, String> {
        let v = match tab.get(key) {
            None => return Err(format!("{at}: {key} is missing")),
            Some(toml::Value::String(s)) => s.trim().to_string(),
            // An EnterpriseID like 4000000001 is naturally written as a number.
            Some(toml::Value::Integer(i)) if key == "enterprise_id" => i.to_string(),
            Some(_) => return Err(format!("{at}: {key} must be a string")),
        };
        if v.is_empty() { Err(format!("{at}: {key} is empty")) } else { Ok(v) }
    };
    let enterprise_id = text("enterprise_id")?;
    if enterprise_id.contains('/') {
        return Err(format!("{at}: enterprise_id {enterprise_id:?} is not a node name (it has a '/')"));
    }
    let raw = text("product_id")?;
    let product_id = percent_decode_str(&raw).decode_utf8_lossy().trim().to_string();
    if !is_braced_guid(&product_id) {
        return Err(format!(
            "{at}: product_id {raw:?} is not a GUID in braces ({{B0322158-C3C2-44EB-8A31-D14A9FEC450E}} or %7B...%7D)"
        ));
    }
    let install_date = match tab.get("install_date") {
        None => None,
        Some(v) => {
            let s = match v {
                toml::Value::Datetime(d) => d.to_string(),
                toml::Value::String(s) => s.clone(),
                _ => return Err(format!("{at}: install_date must be a date-time")),
            };
            let t = DateTime::parse_from_rfc3339(s.trim()).map_err(|e| {
                format!("{at}: install_date {s:?} is not an RFC 3339 date-time with offset (2025-10-30T21:09:52Z): {e}")
            })?;
            Some(t.with_timezone(&Utc))
        }
    };
    Ok(TemplateApp {
        enterprise_id,
        product_id,
        version: text("version")?,
        title: text("title")?,
        publisher: text("publisher")?,
        install_date,
    })
}

/// `{8-4-4-4-12 hex digits}` (the seed: "a single enterprise application product ID in GUID
/// format", sent with the braces escaped).
fn is_braced_guid(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) else { return false };
    let groups: Vec<&str> = inner.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The `[behaviour]` keys of the EnterpriseAppManagement CSP (module docs of
/// `csp::enterprise_app`): a key that begins with `entapp_` must be one of them, with a value of
/// its kind, so that a misspelt setting is an error instead of a silently used default.
fn check_entapp_setting(key: &str, value: &str) -> Result<(), String> {
    if !key.starts_with("entapp_") {
        return Ok(());
    }
    let (name, product) = match key.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (key, None),
    };
    let v = value.trim();
    let bool_ok = || matches!(v.to_ascii_lowercase().as_str(), "true" | "false" | "1" | "0");
    let ok = match (name, product) {
        (
            "entapp_queue_secs"
            | "entapp_download_secs"
            | "entapp_downloaded_secs"
            | "entapp_install_secs"
            | "entapp_fetch_watchdog_secs"
            | "entapp_retention_secs"
            | "entapp_confirm_secs",
            None,
        ) => v.parse::<u64>().map(|_| ()).map_err(|_| "a whole number of seconds"),
        ("entapp_require_confirmation" | "entapp_retry", None) => bool_ok().then_some(()).ok_or("true or false"),
        ("entapp_enterprise_status", None) => {
            matches!(v, "0" | "1" | "2" | "3").then_some(()).ok_or("0, 1, 2 or 3 (ENABLED .. INVALID)")
        }
        ("entapp_publisher", _) => Ok(()),
        ("entapp_size", Some(_)) => v.parse::<u64>().map(|_| ()).map_err(|_| "a size in bytes"),
        ("entapp_sha256", Some(_)) => {
            (v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit())).then_some(()).ok_or("64 hex digits")
        }
        ("entapp_rejected", Some(_)) => bool_ok().then_some(()).ok_or("true or false"),
        ("entapp_size" | "entapp_sha256" | "entapp_rejected", None) => {
            return Err(format!("[behaviour] {key}: name the package, as \"{key}:{{<ProductID>}}\""));
        }
        _ => {
            return Err(format!(
                "[behaviour] {key:?} is not an EnterpriseAppManagement setting (see the module docs of csp::enterprise_app)"
            ));
        }
    };
    match (ok, product) {
        (Err(want), _) => Err(format!("[behaviour] {key} = {value:?}: expected {want}")),
        (Ok(_), Some(p)) if p.trim().is_empty() => Err(format!("[behaviour] {key}: the product ID after ':' is empty")),
        (Ok(_), _) => Ok(()),
    }
}

/// Nested tables become `/`-joined paths; scalar values become their text.
fn flatten(tab: &toml::Table, table: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    fn walk(tab: &toml::Table, prefix: &str, table: &str, out: &mut Vec<(String, String)>) -> Result<(), String> {
        for (k, v) in tab {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}/{k}") };
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Datetime(d) => d.to_string(),
                toml::Value::Table(t) => {
                    walk(t, &path, table, out)?;
                    continue;
                }
                toml::Value::Array(_) => return Err(format!("[{table}] {path}: arrays are not node values")),
            };
            out.push((path, text));
        }
        Ok(())
    }
    walk(tab, "", table, &mut out)?;
    Ok(out)
}

/// The key must name a leaf of the table and the value must fit its format.
fn check_node(root: &'static NodeSpec, table: &str, path: &str, value: &str) -> Result<(), String> {
    let mut spec = root;
    for seg in path.split('/') {
        spec = match spec.child(seg) {
            Some(c) if !c.is_placeholder() => c,
            _ => return Err(format!("[{table}] {path:?} is not a {} node", root.name)),
        };
    }
    if spec.is_interior() {
        return Err(format!("[{table}] {path:?} is an interior node, not a value"));
    }
    let ok = match spec.format {
        Format::Int => value.trim().parse::<i64>().is_ok(),
        Format::Bool => matches!(value, "true" | "false"),
        _ => true,
    };
    if ok { Ok(()) } else { Err(format!("[{table}] {path} = {value:?} is not a valid {} value", spec.format)) }
}

/// Defaults of the `win10` profile: a Windows 11 Enterprise laptop.
const BUILTIN_WIN10: &str = r#"
[devinfo]
Man = "Dell Inc."
Mod = "Latitude 7440"
Lang = "en-US"

[devdetail]
DevTyp = "Latitude 7440"
OEM = "Dell Inc."
FwV = "1.14.1"
HwV = "1.14.1"
SwV = "10.0.22631.4460"

[devdetail.Ext.Microsoft]
DeviceName = "LAPTOP-4F7H2K9Q"
DNSComputerName = "LAPTOP-4F7H2K9Q"
# Windows 11 still reports the registry ProductName here (Learn known issue, PROTOCOL.md §5).
OSPlatform = "Windows 10 Enterprise"
OSEdition = 4
ProcessorArchitecture = 9
ProcessorType = 8664
TotalRAM = 16384
TotalStorage = 486188
SMBIOSSerialNumber = "7HX2Q93"
Resolution = "1920x1200"
"#;

/// Defaults of the `win81` profile: a Windows 8.1 Pro tablet.
const BUILTIN_WIN81: &str = r#"
profile = "win81"

[devinfo]
Man = "Microsoft Corporation"
Mod = "Surface Pro 3"
Lang = "en-US"

[devdetail]
DevTyp = "Surface Pro 3"
OEM = "Microsoft Corporation"
FwV = "3.11.1150.0"
HwV = "1.0"
SwV = "6.3.9600.17031"

[devdetail.Ext.Microsoft]
DeviceName = "SURFACE-8H3K1"
DNSComputerName = "SURFACE-8H3K1"
OSPlatform = "Windows 8.1 Pro"
OSEdition = 48
ProcessorArchitecture = 9
ProcessorType = 8664
TotalRAM = 8192
TotalStorage = 238475
SMBIOSSerialNumber = "034713443553"
Resolution = "2160x1440"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_templates_parse() {
        for p in [Profile::Win10, Profile::Win81] {
            let text = if p == Profile::Win10 { BUILTIN_WIN10 } else { BUILTIN_WIN81 };
            let t = Template::parse(text, "built-in").unwrap();
            assert!(t.devinfo.contains_key("Man"));
            assert!(t.devdetail.contains_key("Ext/Microsoft/SMBIOSSerialNumber"));
        }
        assert_eq!(Template::builtin(Profile::Win81).profile, Some(Profile::Win81));
    }

    #[test]
    fn shipped_templates_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/templates");
        for (file, profile) in [
            ("win11-laptop.toml", Profile::Win10),
            ("win10-desktop.toml", Profile::Win10),
            ("win81-tablet.toml", Profile::Win81),
        ] {
            let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
            let t = Template::parse(&text, file).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(t.profile, Some(profile), "{file}");
            assert!(t.devdetail.contains_key("SwV"), "{file}");
        }
        let desktop = std::fs::read_to_string(format!("{dir}/win10-desktop.toml")).unwrap();
        let t = Template::parse(&desktop, "win10-desktop.toml").unwrap();
        assert_eq!(
            t.apps.iter().map(|a| a.title.as_str()).collect::<Vec<_>>(),
            ["Contoso Company Hub", "Contoso Expenses"]
        );
        assert_eq!(t.behaviour.str("entapp_install_secs"), Some("30"));
    }

    #[test]
    fn nested_and_slash_keys_are_the_same_path_and_overlay_wins() {
        let a = Template::parse("[devdetail.Ext.Microsoft]\nDeviceName = \"A\"\n[behaviour]\nx = 5", "a.toml").unwrap();
        let b = Template::parse("[devdetail]\n\"Ext/Microsoft/DeviceName\" = \"B\"", "b.toml").unwrap();
        assert_eq!(a.devdetail.get("Ext/Microsoft/DeviceName").map(String::as_str), Some("A"));
        assert_eq!(a.behaviour.str("x"), Some("5"));
        let c = a.overlay(&b);
        assert_eq!(c.devdetail.get("Ext/Microsoft/DeviceName").map(String::as_str), Some("B"));
    }

    #[test]
    fn errors_name_the_file_the_table_and_the_key() {
        let e = Template::parse("[devdetail]\nNope = \"x\"", "t.toml").unwrap_err();
        assert_eq!(e.to_string(), "t.toml: [devdetail] \"Nope\" is not a DevDetail node");
        let e = Template::parse("[devdetail.Ext.Microsoft]\nTotalRAM = \"lots\"", "t.toml").unwrap_err();
        assert!(e.to_string().contains("TotalRAM"), "{e}");
        let e = Template::parse("[devinfo]\nDevId = \"x\"", "t.toml").unwrap_err();
        assert!(e.to_string().contains("--id"), "{e}");
        let e = Template::parse("[devinfo\n", "t.toml").unwrap_err();
        assert!(e.to_string().starts_with("t.toml: "), "{e}");
        let e = Template::parse("colour = 1", "t.toml").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    const APP: &str = r#"
[[apps]]
enterprise_id = 4000000001
product_id = "%7Bb0322158-c3c2-44eb-8a31-d14a9fec450e%7D"
version = "1.0.0.0"
title = "Sample1"
publisher = "Contoso"
install_date = 2012-10-30T21:09:52Z
"#;

    #[test]
    fn apps_are_parsed_with_decoded_product_ids() {
        let t = Template::parse(APP, "a.toml").unwrap();
        assert_eq!(t.apps.len(), 1);
        let a = &t.apps[0];
        assert_eq!(a.enterprise_id, "4000000001");
        assert_eq!(a.product_id, "{b0322158-c3c2-44eb-8a31-d14a9fec450e}");
        assert_eq!((a.version.as_str(), a.title.as_str(), a.publisher.as_str()), ("1.0.0.0", "Sample1", "Contoso"));
        assert_eq!(a.install_date.map(|d| d.to_rfc3339()), Some("2012-10-30T21:09:52+00:00".to_string()));
        let no_date = APP.replace("install_date = 2012-10-30T21:09:52Z", "");
        assert_eq!(Template::parse(&no_date, "a.toml").unwrap().apps[0].install_date, None);
        // An overlay replaces the app of the same enterprise and product, keeps the others.
        let newer = Template::parse(&APP.replace("1.0.0.0", "2.0.0.0"), "b.toml").unwrap();
        let both = t.clone().overlay(&newer);
        assert_eq!(both.apps.len(), 1);
        assert_eq!(both.apps[0].version, "2.0.0.0");
    }

    #[test]
    fn app_errors_name_the_file_the_entry_and_the_key() {
        let cases = [
            (APP.replace("version = \"1.0.0.0\"", ""), "t.toml: [[apps]] #1: version is missing"),
            (APP.replace("title = \"Sample1\"", "title = 3"), "t.toml: [[apps]] #1: title must be a string"),
            (APP.replace("%7Bb0322158", "%7Bnope"), "t.toml: [[apps]] #1: product_id \"%7Bnope"),
            (APP.replace("publisher = ", "vendor = \"x\"\npublisher = "), "unexpected key \"vendor\""),
            (APP.replace("2012-10-30T21:09:52Z", "\"last tuesday\""), "install_date \"last tuesday\""),
            (format!("{APP}{APP}"), "t.toml: [[apps]] #2: product_id {b0322158"),
            ("apps = 3".to_string(), "t.toml: apps must be an array of tables"),
        ];
        for (text, want) in cases {
            let e = Template::parse(&text, "t.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} does not contain {want:?}");
        }
    }

    #[test]
    fn entapp_behaviour_keys_are_checked() {
        let ok = "[behaviour]\nentapp_queue_secs = 0\nentapp_retry = true\nentapp_publisher = \"C\"\n\
                  \"entapp_sha256:{B316008A-141D-4A79-810F-8B764C4CFDFB}\" = \"%s\"\n\
                  \"entapp_size:b316008a-141d-4a79-810f-8b764c4cfdfb\" = 12\n\
                  \"entapp_rejected:{B316008A-141D-4A79-810F-8B764C4CFDFB}\" = false\nother = \"free\"";
        let ok = ok.replace("%s", &"ab".repeat(32));
        let t = Template::parse(&ok, "t.toml").unwrap();
        assert_eq!(t.behaviour.str("entapp_size:b316008a-141d-4a79-810f-8b764c4cfdfb"), Some("12"));
        for (text, want) in [
            (
                "[behaviour]\nentapp_queue_sec = 1",
                "t.toml: [behaviour] \"entapp_queue_sec\" is not an EnterpriseAppManagement",
            ),
            ("[behaviour]\nentapp_install_secs = \"soon\"", "entapp_install_secs = \"soon\": expected a whole number"),
            ("[behaviour]\nentapp_retry = \"maybe\"", "entapp_retry = \"maybe\": expected true or false"),
            ("[behaviour]\nentapp_sha256 = \"ab\"", "entapp_sha256: name the package"),
            ("[behaviour]\n\"entapp_sha256:{X}\" = \"ab\"", "expected 64 hex digits"),
            ("[behaviour]\nentapp_enterprise_status = 7", "expected 0, 1, 2 or 3"),
        ] {
            let e = Template::parse(text, "t.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} does not contain {want:?}");
        }
    }
}
