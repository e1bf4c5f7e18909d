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
//! ```
//!
//! Owns parsing and checking (every key must be a node of the DevInfo/DevDetail tables, values
//! must fit the node's format). A file only needs what differs from the built-in defaults
//! ([`Template::builtin`]); reading the file is the caller's job.

use std::collections::BTreeMap;

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
                        t.behaviour.0.insert(k, v);
                    }
                }
                (other, _) => {
                    return Err(err(format!(
                        "unexpected key {other:?} (expected profile, [devinfo], [devdetail], [behaviour])"
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
        self
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
}
