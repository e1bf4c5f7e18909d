//! DevInfo and DevDetail: the device's identity and hardware/software inventory
//! (MS-MDM §3.1.5.1 package 1; the DevInfo and DevDetail CSP pages).
//!
//! Values come from the device template and are stored per device when the device is created;
//! the tables here give formats, operations and the few defaults every Windows client has.
//! `LocalTime` is computed from the clock and the template's `utc_offset_minutes` setting;
//! `LrgObj` depends on the profile (Windows 8.1 had no large-object support).

use chrono::{FixedOffset, SecondsFormat};

use crate::tree::{Csp, CspCx, Format, NodeRef, NodeSpec, Ops, Profile};

const G: Ops = Ops::GET;
const GR: Ops = Ops::GET.with(Ops::REPLACE);

static DEVINFO: NodeSpec = NodeSpec::interior(
    "DevInfo",
    G,
    &[
        NodeSpec::leaf("DevId", Format::Chr, G),
        NodeSpec::leaf("Man", Format::Chr, G),
        NodeSpec::leaf("Mod", Format::Chr, G),
        NodeSpec::leaf("DmV", Format::Chr, G).default("1.3"),
        NodeSpec::leaf("Lang", Format::Chr, G).default("en-US"),
    ],
)
.mime("com.microsoft/1.0/MDM/DevInfo");

/// `./DevInfo`: sent in package 1, readable with Get.
pub struct DevInfo;

impl Csp for DevInfo {
    fn name(&self) -> &'static str {
        "DevInfo"
    }

    fn root(&self) -> &'static str {
        "DevInfo"
    }

    fn schema(&self) -> &'static NodeSpec {
        &DEVINFO
    }
}

static DEVDETAIL: NodeSpec = NodeSpec::interior(
    "DevDetail",
    G,
    &[
        NodeSpec::interior(
            "URI",
            G,
            &[
                NodeSpec::leaf("MaxDepth", Format::Int, G).default("0"),
                NodeSpec::leaf("MaxTotLen", Format::Int, G).default("0"),
                NodeSpec::leaf("MaxSegLen", Format::Int, G).default("0"),
            ],
        ),
        NodeSpec::leaf("DevTyp", Format::Chr, G),
        NodeSpec::leaf("OEM", Format::Chr, G),
        NodeSpec::leaf("FwV", Format::Chr, G),
        NodeSpec::leaf("SwV", Format::Chr, G),
        NodeSpec::leaf("HwV", Format::Chr, G),
        NodeSpec::leaf("LrgObj", Format::Bool, G),
        NodeSpec::interior(
            "Ext",
            G,
            &[
                NodeSpec::interior(
                    "Microsoft",
                    G,
                    &[
                        NodeSpec::leaf("MobileID", Format::Chr, G),
                        NodeSpec::leaf("RadioSwV", Format::Chr, G),
                        NodeSpec::leaf("Resolution", Format::Chr, G),
                        NodeSpec::leaf("CommercializationOperator", Format::Chr, G),
                        NodeSpec::leaf("ProcessorArchitecture", Format::Int, G),
                        NodeSpec::leaf("ProcessorType", Format::Int, G),
                        NodeSpec::leaf("OSPlatform", Format::Chr, G),
                        NodeSpec::leaf("LocalTime", Format::Chr, G),
                        NodeSpec::leaf("DeviceName", Format::Chr, GR),
                        NodeSpec::leaf("DNSComputerName", Format::Chr, GR),
                        NodeSpec::leaf("TotalStorage", Format::Int, G),
                        NodeSpec::leaf("TotalRAM", Format::Int, G),
                        NodeSpec::leaf("SMBIOSSerialNumber", Format::Chr, G),
                        NodeSpec::leaf("SMBIOSVersion", Format::Chr, G),
                        NodeSpec::leaf("OSEdition", Format::Int, G),
                        NodeSpec::leaf("WLANMACAddress", Format::Chr, G),
                        NodeSpec::leaf("VoLTEServiceSetting", Format::Chr, G),
                        NodeSpec::leaf("WlanIPv4Address", Format::Chr, G),
                        NodeSpec::leaf("WlanIPv6Address", Format::Chr, G),
                        NodeSpec::leaf("WlanDnsSuffix", Format::Chr, G),
                        NodeSpec::leaf("WlanSubnetMask", Format::Chr, G),
                        NodeSpec::leaf("DeviceHardwareData", Format::Chr, G),
                    ],
                ),
                NodeSpec::leaf("WLANMACAddress", Format::Chr, G),
                NodeSpec::leaf("VoLTEServiceSetting", Format::Chr, G),
                NodeSpec::leaf("WlanIPv4Address", Format::Chr, G),
                NodeSpec::leaf("DeviceHardwareData", Format::Chr, G),
            ],
        ),
    ],
)
.mime("com.microsoft/1.0/MDM/DevDetail");

/// `./DevDetail`: the inventory servers read (Fleet reads SMBIOSSerialNumber every session).
pub struct DevDetail;

impl Csp for DevDetail {
    fn name(&self) -> &'static str {
        "DevDetail"
    }

    fn root(&self) -> &'static str {
        "DevDetail"
    }

    fn schema(&self) -> &'static NodeSpec {
        &DEVDETAIL
    }

    fn read(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<String> {
        match node.rel {
            "LrgObj" if cx.value("LrgObj").is_none() => Some((cx.env.profile != Profile::Win81).to_string()),
            "Ext/Microsoft/LocalTime" => {
                let minutes =
                    cx.env.settings.str("utc_offset_minutes").and_then(|v| v.trim().parse::<i32>().ok()).unwrap_or(0);
                let offset = FixedOffset::east_opt(minutes * 60).unwrap_or(FixedOffset::east_opt(0)?);
                Some(cx.env.now.with_timezone(&offset).to_rfc3339_opts(SecondsFormat::Secs, false))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::syncml::{Command, Item, ItemCmd, StatusCode};
    use crate::tree::{Env, Registry, Settings, Tree, TreeState};

    fn get(uri: &str, profile: Profile, state: &mut TreeState, settings: Settings) -> (StatusCode, Option<String>) {
        let mut reg = Registry::new();
        reg.register(DevInfo).register(DevDetail);
        let mut env = Env::new(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(), profile);
        env.settings = Arc::new(settings);
        let mut tree = Tree::new(&reg, state, &env);
        let out = tree.execute(&Command::Get(ItemCmd {
            cmd_id: "1".into(),
            items: vec![Item::target(uri)],
            ..ItemCmd::default()
        }));
        (out[0].code, out[0].results.first().and_then(|i| i.data.clone()))
    }

    #[test]
    fn template_values_defaults_and_computed_values_read_back() {
        let mut s = TreeState::new();
        s.set_value("DevInfo/Man", "Contoso");
        assert_eq!(
            get("./DevInfo/Man", Profile::Win10, &mut s, Settings::default()),
            (StatusCode::Ok, Some("Contoso".into()))
        );
        assert_eq!(get("./DevInfo/DmV", Profile::Win10, &mut s, Settings::default()).1.as_deref(), Some("1.3"));
        assert_eq!(get("./DevDetail/LrgObj", Profile::Win10, &mut s, Settings::default()).1.as_deref(), Some("true"));
        assert_eq!(get("./DevDetail/LrgObj", Profile::Win81, &mut s, Settings::default()).1.as_deref(), Some("false"));
        let mut tz = Settings::default();
        tz.0.insert("utc_offset_minutes".into(), "-300".into());
        assert_eq!(
            get("./DevDetail/Ext/Microsoft/LocalTime", Profile::Win10, &mut s, tz).1.as_deref(),
            Some("2026-01-01T22:04:05-05:00")
        );
        // MobileID is 404 on PCs: no value in the template.
        assert_eq!(
            get("./DevDetail/Ext/Microsoft/MobileID", Profile::Win10, &mut s, Settings::default()).0,
            StatusCode::NotFound
        );
    }
}
