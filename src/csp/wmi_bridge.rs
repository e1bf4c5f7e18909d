//! The WMI bridge (`./cimv2/...`): WMI classes seen as DM tree nodes, on both profiles
//! (Microsoft's "WMI providers supported in Windows" and "WMI Bridge provider" pages).
//!
//! A LocURI names a class, an instance and a property or method:
//! `./cimv2/<Class>/<instance path>/<Property>`. The instance segment is a WMI object path,
//! sent percent-encoded or not: `Win32_LogicalDisk.DeviceID=%22C%3A%22` or
//! `Win32_LogicalDisk.DeviceID='C:'` (Fleet's form), `Class="value"` for a class with one key,
//! `Win32_OperatingSystem=@` for a singleton. Class, key and property names are
//! case-insensitive as in WMI (`./cimV2/win32_bios/...`), and Results echo the LocURI as sent.
//!
//! Inventory, read-only on both profiles (a write is 405), values from the device template:
//! - `Win32_OperatingSystem=@`: BuildNumber, Caption, CSName, InstallDate, LastBootUpTime,
//!   LocalDateTime, Manufacturer, OperatingSystemSKU, OSArchitecture, SystemDrive,
//!   TotalVisibleMemorySize, Version, WindowsDirectory.
//! - `Win32_ComputerSystem.Name="<DeviceName>"`: DNSHostName, Domain, Manufacturer, Model, Name,
//!   PartOfDomain, SystemType, TotalPhysicalMemory.
//! - `Win32_BIOS.Name=..,SoftwareElementID=..,SoftwareElementState=3,TargetOperatingSystem=0,Version=..`
//!   (the class's five keys): Manufacturer, Name, PrimaryBIOS, ReleaseDate, SerialNumber,
//!   SMBIOSBIOSVersion, SoftwareElementID, SoftwareElementState, TargetOperatingSystem, Version.
//! - `Win32_PhysicalMemory.Tag="Physical Memory <n>"`: BankLabel, Capacity, ConfiguredClockSpeed,
//!   DeviceLocator, FormFactor, Manufacturer, SMBIOSMemoryType, Speed, Tag.
//! - `Win32_LogicalDisk.DeviceID="<X>:"`: Description, DeviceID, DriveType, FileSystem,
//!   FreeSpace, Size, VolumeName.
//!
//! What DevInfo/DevDetail already say is read from their stored values, so the two never
//! disagree: Manufacturer = DevDetail OEM, Model = DevInfo Mod, Name/CSName = DeviceName,
//! DNSHostName = DNSComputerName, SerialNumber = SMBIOSSerialNumber, SMBIOSBIOSVersion = FwV,
//! Version/BuildNumber from SwV, OperatingSystemSKU = OSEdition, memory from TotalRAM (MB),
//! the C: size from TotalStorage (MB), the OS architecture from ProcessorArchitecture, times
//! in the `utc_offset_minutes` offset. The rest comes from the template's optional `[wmi]`
//! table ([`template_settings`]) or defaults. Numbers are sent with Format `int` (sizes in
//! bytes), texts and CIM datetimes (`yyyymmddHHMMSS.mmmmmm+UUU`) with `chr`, booleans with
//! `bool`. A Get of `./cimv2` lists the classes, of a class its instance paths, unescaped and
//! separated by `/` as the "WMI providers supported in Windows" page shows, of an instance its
//! properties. An unknown class, instance or property is 404.
//!
//! Windows 8.1 methods, on the `win81` profile only (the MDM agent of Windows 8.1 documents
//! them for its operation modes; Windows 10 answers 404):
//! an Exec on `./cimv2/<Class>/<instance>/Exec=<Method>` (Data such as `NamedValuesList=...`):
//! - `MDM_Client/.../Exec=SendUnenrollRequest`: the server unenrolls the device; it answers 200
//!   and emits [`Effect::Unenroll`], which the runner carries out (allowed in Machine mode).
//! - `MDM_Client/.../Exec=ResetUserPassword`: answers 200; there is no user password to model.
//! - `MDM_WNSConfiguration/MDM_WNSConfiguration.AppId=%22{AppId}%22/Exec=UpdateConfiguration`:
//!   answers 200 and asks the push notification service for a channel for the AppId
//!   ([`Effect::RequestChannel`]), as a DMClient `Push/PFN` write does; the channel and its status
//!   are read at the enrollment's DMClient `Provider/<ID>/Push/ChannelURI` and `Push/Status`
//!   (the `MDM_WNSChannel` class is not modelled). It needs the enrolled user's impersonation: the Machine-mode and interactive rules are the session gate's
//!   (`session::mode_gate`), not this CSP's.
//!
//! Not modelled: other classes (Win32_Processor, Win32_NetworkAdapter, MDM_Policy_*...), other
//! properties and array properties (BIOSVersion...) answer 404; any Add, Replace or Delete is
//! 405 (no instance creation, no property writes); no WMI queries; nothing changes while the
//! device runs (FreeSpace stays as the template says). That the bridge sends uint64 values with
//! Format `int` is our choice: no capture of a Windows 10/11 reply says otherwise.

use chrono::{DateTime, FixedOffset, NaiveDate, SecondsFormat, Utc};

use crate::syncml::StatusCode;
use crate::tree::{Csp, CspCx, Effect, Env, Format, NodeRef, NodeSpec, Ops, Profile};

const G: Ops = Ops::GET;

/// A method node: `Exec=<Method>` below an instance.
const METHOD: NodeSpec = NodeSpec::leaf("<Method>", Format::Null, Ops::EXEC);

const fn chr(name: &'static str) -> NodeSpec {
    NodeSpec::leaf(name, Format::Chr, G)
}

const fn int(name: &'static str) -> NodeSpec {
    NodeSpec::leaf(name, Format::Int, G)
}

const fn boolean(name: &'static str) -> NodeSpec {
    NodeSpec::leaf(name, Format::Bool, G)
}

static CIMV2: NodeSpec = NodeSpec::interior(
    "cimv2",
    G,
    &[
        NodeSpec::interior(
            "Win32_BIOS",
            G,
            &[NodeSpec::interior(
                "<Instance>",
                G,
                &[
                    chr("Manufacturer"),
                    chr("Name"),
                    boolean("PrimaryBIOS"),
                    chr("ReleaseDate"),
                    chr("SerialNumber"),
                    chr("SMBIOSBIOSVersion"),
                    chr("SoftwareElementID"),
                    int("SoftwareElementState"),
                    int("TargetOperatingSystem"),
                    chr("Version"),
                ],
            )],
        ),
        NodeSpec::interior(
            "Win32_ComputerSystem",
            G,
            &[NodeSpec::interior(
                "<Instance>",
                G,
                &[
                    chr("DNSHostName"),
                    chr("Domain"),
                    chr("Manufacturer"),
                    chr("Model"),
                    chr("Name"),
                    boolean("PartOfDomain"),
                    chr("SystemType"),
                    int("TotalPhysicalMemory"),
                ],
            )],
        ),
        NodeSpec::interior(
            "Win32_LogicalDisk",
            G,
            &[NodeSpec::interior(
                "<Instance>",
                G,
                &[
                    chr("Description"),
                    chr("DeviceID"),
                    int("DriveType"),
                    chr("FileSystem"),
                    int("FreeSpace"),
                    int("Size"),
                    chr("VolumeName"),
                ],
            )],
        ),
        NodeSpec::interior(
            "Win32_OperatingSystem",
            G,
            &[NodeSpec::interior(
                "<Instance>",
                G,
                &[
                    chr("BuildNumber"),
                    chr("Caption"),
                    chr("CSName"),
                    chr("InstallDate"),
                    chr("LastBootUpTime"),
                    chr("LocalDateTime"),
                    chr("Manufacturer"),
                    int("OperatingSystemSKU"),
                    chr("OSArchitecture"),
                    chr("SystemDrive"),
                    int("TotalVisibleMemorySize"),
                    chr("Version"),
                    chr("WindowsDirectory"),
                ],
            )],
        ),
        NodeSpec::interior(
            "Win32_PhysicalMemory",
            G,
            &[NodeSpec::interior(
                "<Instance>",
                G,
                &[
                    chr("BankLabel"),
                    int("Capacity"),
                    int("ConfiguredClockSpeed"),
                    chr("DeviceLocator"),
                    int("FormFactor"),
                    chr("Manufacturer"),
                    int("SMBIOSMemoryType"),
                    int("Speed"),
                    chr("Tag"),
                ],
            )],
        ),
        NodeSpec::interior("MDM_Client", G, &[NodeSpec::interior("<Instance>", G, &[METHOD])]),
        NodeSpec::interior("MDM_WNSConfiguration", G, &[NodeSpec::interior("<Instance>", G, &[METHOD])]),
    ],
);

/// The classes of the table, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Bios,
    ComputerSystem,
    LogicalDisk,
    OperatingSystem,
    PhysicalMemory,
    MdmClient,
    MdmWnsConfiguration,
}

impl Class {
    const ALL: [Class; 7] = [
        Class::Bios,
        Class::ComputerSystem,
        Class::LogicalDisk,
        Class::OperatingSystem,
        Class::PhysicalMemory,
        Class::MdmClient,
        Class::MdmWnsConfiguration,
    ];

    fn name(self) -> &'static str {
        match self {
            Class::Bios => "Win32_BIOS",
            Class::ComputerSystem => "Win32_ComputerSystem",
            Class::LogicalDisk => "Win32_LogicalDisk",
            Class::OperatingSystem => "Win32_OperatingSystem",
            Class::PhysicalMemory => "Win32_PhysicalMemory",
            Class::MdmClient => "MDM_Client",
            Class::MdmWnsConfiguration => "MDM_WNSConfiguration",
        }
    }

    /// The class a segment names, in any case.
    fn parse(name: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// Whether the device has the class: the MDM_* method classes are Windows 8.1's.
    fn present(self, env: &Env) -> bool {
        !matches!(self, Class::MdmClient | Class::MdmWnsConfiguration) || env.profile == Profile::Win81
    }
}

/// A WMI object path as an instance segment writes it (percent-decoded): `Class=@` for a
/// singleton, `Class.Key="value",Other=3` (double or single quotes, `\` escapes), or
/// `Class="value"` for a class with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ObjectPath {
    class: String,
    /// `None` for `Class=@`; a key without a name (`Class="v"`) has an empty name.
    keys: Option<Vec<(String, String)>>,
}

impl ObjectPath {
    fn parse(s: &str) -> Option<ObjectPath> {
        let split = s.find(['.', '='])?;
        let class = s[..split].to_string();
        if class.is_empty() {
            return None;
        }
        let rest = &s[split..];
        if rest == "=@" {
            return Some(ObjectPath { class, keys: None });
        }
        let mut keys = Vec::new();
        let mut chars = rest.chars().peekable();
        let unnamed = chars.next() == Some('=');
        loop {
            let mut name = String::new();
            if !(unnamed && keys.is_empty()) {
                for c in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    name.push(c);
                }
                if name.is_empty() {
                    return None;
                }
            }
            let mut value = String::new();
            match chars.peek().copied() {
                Some(q @ ('"' | '\'')) => {
                    chars.next();
                    loop {
                        match chars.next()? {
                            '\\' => value.push(chars.next()?),
                            c if c == q => break,
                            c => value.push(c),
                        }
                    }
                }
                Some(_) => {
                    while let Some(&c) = chars.peek() {
                        if c == ',' {
                            break;
                        }
                        value.push(c);
                        chars.next();
                    }
                }
                None => return None,
            }
            keys.push((name.trim().to_string(), value));
            match chars.next() {
                None => break,
                Some(',') => {}
                Some(_) => return None,
            }
        }
        Some(ObjectPath { class, keys: Some(keys) })
    }
}

/// A key property value: string keys are quoted in paths, integer keys are not.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Str(String),
    Int(u64),
}

/// One WMI instance of the inventory: its key properties (none for a singleton) and the values
/// of its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    class: Class,
    keys: Vec<(&'static str, Key)>,
    values: Vec<(&'static str, String)>,
}

impl Instance {
    /// The object path Windows lists (`Win32_LogicalDisk.DeviceID="C:"`, `Class=@`).
    fn path(&self) -> String {
        if self.keys.is_empty() {
            return format!("{}=@", self.class.name());
        }
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|(k, v)| match v {
                Key::Str(s) => format!("{k}=\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
                Key::Int(i) => format!("{k}={i}"),
            })
            .collect();
        format!("{}.{}", self.class.name(), keys.join(","))
    }

    /// Whether `path` names this instance: every key given once, names and string values in
    /// any case (WMI compares them so).
    fn matches(&self, path: &ObjectPath) -> bool {
        if !path.class.eq_ignore_ascii_case(self.class.name()) {
            return false;
        }
        let Some(given) = &path.keys else { return self.keys.is_empty() };
        if given.len() != self.keys.len() || self.keys.is_empty() {
            return false;
        }
        given.iter().all(|(name, value)| {
            let key = if name.is_empty() && self.keys.len() == 1 {
                self.keys.first()
            } else {
                self.keys.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))
            };
            match key {
                Some((_, Key::Str(s))) => s.eq_ignore_ascii_case(value),
                Some((_, Key::Int(i))) => value.trim().parse::<u64>().is_ok_and(|v| v == *i),
                None => false,
            }
        })
    }

    fn value(&self, property: &str) -> Option<&str> {
        self.values.iter().find(|(p, _)| p.eq_ignore_ascii_case(property)).map(|(_, v)| v.as_str())
    }
}

const MIB: u64 = 1024 * 1024;

/// The most memory modules a template may give.
const MAX_MODULES: u64 = 64;

/// `InstallDate` when the template gives none.
const DEFAULT_INSTALL_DATE: &str = "2025-01-06T09:00:00Z";
/// `Win32_BIOS.ReleaseDate` when the template gives none.
const DEFAULT_BIOS_RELEASE_DATE: &str = "2024-01-01T00:00:00Z";

/// What the inventory reads: the device's DevInfo/DevDetail values and the `wmi.*` settings.
struct Facts<'c, 'a> {
    cx: &'c CspCx<'a>,
}

impl Facts<'_, '_> {
    /// A stored `./DevDetail/<path>` value (written from the template's `[devdetail]`).
    fn devdetail(&self, path: &str) -> Option<&str> {
        self.cx.state.value(&format!("DevDetail/{path}")).filter(|v| !v.trim().is_empty())
    }

    fn devinfo(&self, path: &str) -> Option<&str> {
        self.cx.state.value(&format!("DevInfo/{path}")).filter(|v| !v.trim().is_empty())
    }

    fn setting(&self, key: &str) -> Option<&str> {
        self.cx.env.settings.str(&format!("wmi.{key}"))
    }

    fn setting_u64(&self, key: &str) -> Option<u64> {
        self.setting(key).and_then(|v| v.trim().parse().ok())
    }

    fn devdetail_u64(&self, path: &str) -> Option<u64> {
        self.devdetail(path).and_then(|v| v.trim().parse().ok())
    }

    fn device_name(&self) -> String {
        self.devdetail("Ext/Microsoft/DeviceName").unwrap_or("DESKTOP").to_string()
    }

    fn manufacturer(&self) -> String {
        self.devdetail("OEM").or_else(|| self.devinfo("Man")).unwrap_or("").to_string()
    }

    /// The device's UTC offset (the `utc_offset_minutes` setting DevDetail LocalTime uses).
    fn offset(&self) -> FixedOffset {
        let minutes =
            self.cx.env.settings.str("utc_offset_minutes").and_then(|v| v.trim().parse::<i32>().ok()).unwrap_or(0);
        FixedOffset::east_opt(minutes * 60).unwrap_or(FixedOffset::east_opt(0).expect("zero offset"))
    }

    /// A CIM datetime in the device's offset: `20250106100000.000000+060`.
    fn cim_datetime(&self, t: DateTime<Utc>) -> String {
        let offset = self.offset();
        let local = t.with_timezone(&offset);
        format!("{}.000000{:+04}", local.format("%Y%m%d%H%M%S"), offset.local_minus_utc() / 60)
    }

    /// A `wmi.*` date setting (RFC 3339), or `default`.
    fn date_setting(&self, key: &str, default: &str) -> DateTime<Utc> {
        let parse = |s: &str| DateTime::parse_from_rfc3339(s.trim()).ok().map(|t| t.with_timezone(&Utc));
        self.setting(key).and_then(parse).or_else(|| parse(default)).unwrap_or_default()
    }

    /// `major.minor.build` of DevDetail SwV (`10.0.22631.4460` -> `10.0.22631`).
    fn os_version(&self) -> String {
        let swv = self.devdetail("SwV").unwrap_or("10.0.19045");
        swv.split('.').take(3).collect::<Vec<_>>().join(".")
    }

    fn build(&self) -> String {
        self.os_version().split('.').nth(2).unwrap_or("0").to_string()
    }

    /// DevDetail ProcessorArchitecture (PROCESSOR_ARCHITECTURE_*: 0 x86, 9 x64, 12 ARM64).
    fn architecture(&self) -> u64 {
        self.devdetail_u64("Ext/Microsoft/ProcessorArchitecture").unwrap_or(9)
    }

    fn domain(&self) -> String {
        self.setting("domain").unwrap_or("WORKGROUP").to_string()
    }

    fn total_ram_bytes(&self) -> Option<u64> {
        self.devdetail_u64("Ext/Microsoft/TotalRAM").map(|mb| mb * MIB)
    }

    fn operating_system(&self) -> Instance {
        let caption = match self.setting("os_caption") {
            Some(c) => c.to_string(),
            None => {
                // DevDetail OSPlatform is the registry ProductName, which still says
                // "Windows 10" on Windows 11 (build 22000 and later); WMI's Caption does not.
                let platform = self.devdetail("Ext/Microsoft/OSPlatform").unwrap_or("Windows");
                let platform = if self.build().parse::<u64>().is_ok_and(|b| b >= 22000) {
                    platform.replacen("Windows 10", "Windows 11", 1)
                } else {
                    platform.to_string()
                };
                format!("Microsoft {platform}")
            }
        };
        let os_architecture = match self.architecture() {
            0 => "32-bit",
            12 => "ARM 64-bit Processor",
            _ => "64-bit",
        };
        let last_boot = match self.setting("last_boot") {
            Some(_) => self.date_setting("last_boot", DEFAULT_INSTALL_DATE),
            // Booted at local midnight today: stable through a day, never in the future.
            None => {
                let local = self.cx.env.now.with_timezone(&self.offset());
                let midnight = local.date_naive().and_hms_opt(0, 0, 0).unwrap_or_default();
                self.cx.env.now - (local.naive_local() - midnight)
            }
        };
        let mut values = vec![
            ("BuildNumber", self.build()),
            ("Caption", caption),
            ("CSName", self.device_name()),
            ("InstallDate", self.cim_datetime(self.date_setting("install_date", DEFAULT_INSTALL_DATE))),
            ("LastBootUpTime", self.cim_datetime(last_boot)),
            ("LocalDateTime", self.cim_datetime(self.cx.env.now)),
            ("Manufacturer", "Microsoft Corporation".to_string()),
            ("OSArchitecture", os_architecture.to_string()),
            ("SystemDrive", "C:".to_string()),
            ("Version", self.os_version()),
            ("WindowsDirectory", "C:\\Windows".to_string()),
        ];
        if let Some(sku) = self.devdetail("Ext/Microsoft/OSEdition") {
            values.push(("OperatingSystemSKU", sku.to_string()));
        }
        if let Some(bytes) = self.total_ram_bytes() {
            values.push(("TotalVisibleMemorySize", (bytes / 1024).to_string()));
        }
        Instance { class: Class::OperatingSystem, keys: Vec::new(), values }
    }

    fn computer_system(&self) -> Instance {
        let name = self.device_name();
        let domain = self.domain();
        let system_type = match self.architecture() {
            0 => "X86-based PC",
            12 => "ARM64-based PC",
            _ => "x64-based PC",
        };
        let mut values = vec![
            ("DNSHostName", self.devdetail("Ext/Microsoft/DNSComputerName").map_or(name.clone(), str::to_string)),
            ("Domain", domain.clone()),
            ("Manufacturer", self.manufacturer()),
            ("Model", self.devinfo("Mod").or_else(|| self.devdetail("DevTyp")).unwrap_or("").to_string()),
            ("Name", name.clone()),
            ("PartOfDomain", (!domain.eq_ignore_ascii_case("WORKGROUP")).to_string()),
            ("SystemType", system_type.to_string()),
        ];
        if let Some(bytes) = self.total_ram_bytes() {
            values.push(("TotalPhysicalMemory", bytes.to_string()));
        }
        Instance { class: Class::ComputerSystem, keys: vec![("Name", Key::Str(name))], values }
    }

    fn bios(&self) -> Instance {
        let smbios_version = self.devdetail("FwV").unwrap_or("1.0").to_string();
        let version = self.setting("bios_version").map_or(smbios_version.clone(), str::to_string);
        let mut values = vec![
            ("Manufacturer", self.setting("bios_manufacturer").map_or_else(|| self.manufacturer(), str::to_string)),
            ("Name", smbios_version.clone()),
            ("PrimaryBIOS", "true".to_string()),
            ("ReleaseDate", self.cim_datetime(self.date_setting("bios_release_date", DEFAULT_BIOS_RELEASE_DATE))),
            ("SMBIOSBIOSVersion", smbios_version.clone()),
            ("SoftwareElementID", smbios_version.clone()),
            ("SoftwareElementState", "3".to_string()),
            ("TargetOperatingSystem", "0".to_string()),
            ("Version", version.clone()),
        ];
        if let Some(serial) = self.devdetail("Ext/Microsoft/SMBIOSSerialNumber") {
            values.push(("SerialNumber", serial.to_string()));
        }
        let keys = vec![
            ("Name", Key::Str(smbios_version.clone())),
            ("SoftwareElementID", Key::Str(smbios_version)),
            // 3 = Executable, 0 = Unknown: what Windows reports for the BIOS element.
            ("SoftwareElementState", Key::Int(3)),
            ("TargetOperatingSystem", Key::Int(0)),
            ("Version", Key::Str(version)),
        ];
        Instance { class: Class::Bios, keys, values }
    }

    /// The memory modules: `memory_modules` of them (default 1) sharing TotalRAM.
    fn physical_memory(&self) -> Vec<Instance> {
        let Some(total) = self.total_ram_bytes() else { return Vec::new() };
        let n = self.setting_u64("memory_modules").unwrap_or(1).clamp(1, MAX_MODULES);
        let speed = self.setting_u64("memory_speed").unwrap_or(3200).to_string();
        (0..n)
            .map(|i| {
                // The last module takes the remainder, so the capacities add up to TotalRAM.
                let capacity = if i + 1 == n { total - total / n * (n - 1) } else { total / n };
                let tag = format!("Physical Memory {i}");
                let values = vec![
                    ("BankLabel", format!("BANK {i}")),
                    ("Capacity", capacity.to_string()),
                    ("ConfiguredClockSpeed", speed.clone()),
                    ("DeviceLocator", format!("DIMM {i}")),
                    ("FormFactor", self.setting_u64("memory_form_factor").unwrap_or(12).to_string()),
                    ("Manufacturer", self.setting("memory_manufacturer").unwrap_or("Samsung").to_string()),
                    ("SMBIOSMemoryType", self.setting_u64("memory_type").unwrap_or(26).to_string()),
                    ("Speed", speed.clone()),
                    ("Tag", tag.clone()),
                ];
                Instance { class: Class::PhysicalMemory, keys: vec![("Tag", Key::Str(tag))], values }
            })
            .collect()
    }

    /// The `[[wmi.disks]]` of the template, or C: alone; C:'s size defaults to TotalStorage.
    fn logical_disks(&self) -> Vec<Instance> {
        let list = self.setting("disks").unwrap_or("C:");
        list.split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|id| {
                let prop = |p: &str| self.setting(&format!("disk.{id}.{p}"));
                let size = prop("size").and_then(|v| v.parse::<u64>().ok()).or_else(|| {
                    id.eq_ignore_ascii_case("C:")
                        .then(|| self.devdetail_u64("Ext/Microsoft/TotalStorage"))
                        .flatten()
                        .map(|mb| mb * MIB)
                });
                let drive_type = prop("drive_type").and_then(|v| v.parse::<u64>().ok()).unwrap_or(3);
                let description = match drive_type {
                    2 => "Removable Disk",
                    3 => "Local Fixed Disk",
                    4 => "Network Connection",
                    5 => "CD-ROM Disc",
                    _ => "Unknown",
                };
                let mut values = vec![
                    ("Description", description.to_string()),
                    ("DeviceID", id.to_string()),
                    ("DriveType", drive_type.to_string()),
                    ("FileSystem", prop("file_system").unwrap_or("NTFS").to_string()),
                    ("VolumeName", prop("volume_name").unwrap_or("").to_string()),
                ];
                if let Some(size) = size {
                    // 40% free unless the template says.
                    let free = prop("free_space").and_then(|v| v.parse::<u64>().ok()).unwrap_or(size / 5 * 2);
                    values.push(("FreeSpace", free.min(size).to_string()));
                    values.push(("Size", size.to_string()));
                }
                Instance { class: Class::LogicalDisk, keys: vec![("DeviceID", Key::Str(id.to_string()))], values }
            })
            .collect()
    }

    fn instances(&self, class: Class) -> Vec<Instance> {
        match class {
            Class::Bios => vec![self.bios()],
            Class::ComputerSystem => vec![self.computer_system()],
            Class::LogicalDisk => self.logical_disks(),
            Class::OperatingSystem => vec![self.operating_system()],
            Class::PhysicalMemory => self.physical_memory(),
            Class::MdmClient | Class::MdmWnsConfiguration => Vec::new(),
        }
    }

    /// The inventory instance a segment names.
    fn instance(&self, class: Class, segment: &str) -> Option<Instance> {
        let path = ObjectPath::parse(segment)?;
        self.instances(class).into_iter().find(|i| i.matches(&path))
    }
}

/// `./cimv2`: the WMI bridge.
pub struct WmiBridge;

impl Csp for WmiBridge {
    fn name(&self) -> &'static str {
        "WmiBridge"
    }

    fn root(&self) -> &'static str {
        "cimv2"
    }

    fn schema(&self) -> &'static NodeSpec {
        &CIMV2
    }

    fn ignore_case(&self) -> bool {
        true
    }

    fn exists(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> bool {
        let segments = node.segment_list();
        let Some(class) = segments.first().and_then(|c| Class::parse(c)) else { return true };
        match segments[..] {
            [_] => class.present(cx.env),
            // The MDM_* instances are whatever the server names (the methods need no state),
            // as long as the path names the class.
            [_, instance] if matches!(class, Class::MdmClient | Class::MdmWnsConfiguration) => {
                ObjectPath::parse(instance).is_some_and(|p| p.class.eq_ignore_ascii_case(class.name()))
            }
            [_, instance] => Facts { cx }.instance(class, instance).is_some(),
            _ => true,
        }
    }

    fn children(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<Vec<String>> {
        let segments = node.segment_list();
        match segments[..] {
            [] => Some(Class::ALL.into_iter().filter(|c| c.present(cx.env)).map(|c| c.name().to_string()).collect()),
            [class] => {
                let class = Class::parse(class)?;
                Some(Facts { cx }.instances(class).iter().map(Instance::path).collect())
            }
            _ => None,
        }
    }

    fn read(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<String> {
        let segments = node.segment_list();
        let [class, instance, property] = segments[..] else { return None };
        let facts = Facts { cx };
        facts.instance(Class::parse(class)?, instance)?.value(property).map(str::to_string)
    }

    fn exec(&self, cx: &mut CspCx<'_>, node: NodeRef<'_>, _data: Option<&str>) -> StatusCode {
        let segments = node.segment_list();
        let [class, instance, method] = segments[..] else { return StatusCode::CommandNotAllowed };
        let Some(class) = Class::parse(class) else { return StatusCode::NotFound };
        let method = method.strip_prefix("Exec=").unwrap_or(method);
        let is = |m: &str| method.eq_ignore_ascii_case(m);
        match class {
            Class::MdmClient if is("SendUnenrollRequest") => {
                cx.emit(Effect::Unenroll { reason: format!("{instance}: SendUnenrollRequest (WMI bridge)") });
                StatusCode::Ok
            }
            Class::MdmClient if is("ResetUserPassword") => StatusCode::Ok,
            Class::MdmWnsConfiguration if is("UpdateConfiguration") => {
                // The agent registers the app with WNS for the enrolled user; the channel the
                // service gives is kept with the enrollment's DMClient provider, where
                // Push/ChannelURI and Push/Status read it.
                let app = wns_app_id(instance);
                if let Some(id) = crate::csp::dmclient::provider_ids(cx.state).into_iter().next()
                    && !app.is_empty()
                {
                    let push = format!("{}/Push", crate::csp::dmclient::provider_key(&id));
                    if cx.state.entry(&push).is_none() {
                        cx.state.set(&push, crate::tree::Entry::Interior);
                    }
                    crate::csp::dmclient::request_channel(cx.state, &push, &app, cx.effects);
                }
                StatusCode::Ok
            }
            _ => StatusCode::NotFound,
        }
    }
}

/// The AppId of an `MDM_WNSConfiguration.AppId="{AppId}"` instance path (quotes and
/// percent-escapes taken off), or the whole segment when it has another form.
fn wns_app_id(instance: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(instance).decode_utf8_lossy();
    let value = decoded.split_once('=').map_or(decoded.as_ref(), |(_, v)| v);
    value.trim().trim_matches(|c| c == '"' || c == '\'').trim().to_string()
}

/// Reads a template's `[wmi]` table into the `wmi.*` settings the bridge reads (checked here,
/// so a misspelt key is an error, not a silent default):
///
/// ```toml
/// [wmi]
/// os_caption = "Microsoft Windows 11 Pro"   # default: from OSPlatform and the build
/// install_date = 2024-05-14T09:12:00Z       # Win32_OperatingSystem.InstallDate
/// last_boot = 2026-03-02T07:55:00Z          # default: local midnight of the current day
/// domain = "CONTOSO"                        # default WORKGROUP (PartOfDomain false)
/// bios_manufacturer = "Dell Inc."           # default: DevDetail OEM
/// bios_version = "DELL   - 1072009"         # default: DevDetail FwV
/// bios_release_date = 2023-11-08            # a date or a date-time
/// memory_modules = 2                        # TotalRAM split over this many (default 1)
/// memory_manufacturer = "Samsung"
/// memory_speed = 5600                       # MHz (default 3200)
/// memory_type = 34                          # SMBIOSMemoryType (default 26, DDR4)
/// memory_form_factor = 12                   # FormFactor (default 12, SODIMM)
///
/// [[wmi.disks]]                             # replaces the default list (C: alone)
/// device_id = "C:"                          # must be listed
/// size = 512105984000                       # bytes; C: defaults to TotalStorage
/// free_space = 301234567890                 # default 40% of size
/// file_system = "NTFS"
/// volume_name = "Windows"
/// drive_type = 3                            # 2 removable, 3 local, 4 network, 5 CD-ROM
/// ```
pub fn template_settings(tab: &toml::Table) -> Result<Vec<(String, String)>, String> {
    const TEXT: [&str; 5] = ["os_caption", "domain", "bios_manufacturer", "bios_version", "memory_manufacturer"];
    const NUMBER: [&str; 4] = ["memory_modules", "memory_speed", "memory_type", "memory_form_factor"];
    const DATE: [&str; 3] = ["install_date", "last_boot", "bios_release_date"];
    let mut out = Vec::new();
    for (key, value) in tab {
        let at = format!("[wmi] {key}");
        let k = key.as_str();
        let text = if TEXT.contains(&k) {
            value.as_str().map(str::to_string).ok_or(format!("{at} must be a string"))?
        } else if NUMBER.contains(&k) {
            match value.as_integer() {
                Some(n) if n >= 1 && (k != "memory_modules" || n <= MAX_MODULES as i64) => n.to_string(),
                _ if k == "memory_modules" => return Err(format!("{at} must be 1 to {MAX_MODULES}")),
                _ => return Err(format!("{at} must be a whole number above 0")),
            }
        } else if DATE.contains(&k) {
            date_value(value).ok_or(format!("{at} must be a date (2023-11-08) or an RFC 3339 date-time"))?
        } else if k == "disks" {
            out.extend(disks(value)?);
            continue;
        } else {
            let all: Vec<&str> = TEXT.iter().chain(&NUMBER).chain(&DATE).copied().chain(["disks"]).collect();
            return Err(format!("[wmi] unexpected key {key:?} (expected {})", all.join(", ")));
        };
        out.push((format!("wmi.{key}"), text));
    }
    Ok(out)
}

/// A TOML date or date-time (or its text) as RFC 3339 in UTC.
fn date_value(value: &toml::Value) -> Option<String> {
    let text = match value {
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::String(s) => s.trim().to_string(),
        _ => return None,
    };
    let t = match DateTime::parse_from_rfc3339(&text) {
        Ok(t) => t.with_timezone(&Utc),
        Err(_) => NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok()?.and_hms_opt(0, 0, 0)?.and_utc(),
    };
    Some(t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// `[[wmi.disks]]` as `wmi.disks` (the drive list) and `wmi.disk.<X:>.<key>` settings.
fn disks(value: &toml::Value) -> Result<Vec<(String, String)>, String> {
    const KEYS: [&str; 6] = ["device_id", "size", "free_space", "file_system", "volume_name", "drive_type"];
    let entries = value.as_array().ok_or("[wmi] disks must be an array of tables ([[wmi.disks]])")?;
    let mut ids: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("[[wmi.disks]] #{}", i + 1);
        let tab = entry.as_table().ok_or(format!("{at}: must be a table"))?;
        if let Some(k) = tab.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!("{at}: unexpected key {k:?} (expected {})", KEYS.join(", ")));
        }
        let id = tab.get("device_id").and_then(|v| v.as_str()).ok_or(format!("{at}: device_id is missing"))?;
        let id = id.trim().to_ascii_uppercase();
        let letter = id.strip_suffix(':').filter(|l| l.len() == 1 && l.chars().all(|c| c.is_ascii_alphabetic()));
        if letter.is_none() {
            return Err(format!("{at}: device_id {id:?} is not a drive letter and a colon (\"D:\")"));
        }
        if ids.contains(&id) {
            return Err(format!("{at}: {id} is listed twice"));
        }
        let number = |k: &str| -> Result<Option<u64>, String> {
            match tab.get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_integer()
                    .and_then(|n| u64::try_from(n).ok())
                    .map(Some)
                    .ok_or(format!("{at}: {k} must be a whole number of bytes")),
            }
        };
        let size = number("size")?;
        let free = number("free_space")?;
        if size.is_none() && id != "C:" {
            return Err(format!("{at}: size is missing (only C: defaults to TotalStorage)"));
        }
        if let (Some(size), Some(free)) = (size, free)
            && free > size
        {
            return Err(format!("{at}: free_space {free} is more than size {size}"));
        }
        let set = |out: &mut Vec<(String, String)>, k: &str, v: String| out.push((format!("wmi.disk.{id}.{k}"), v));
        if let Some(s) = size {
            set(&mut out, "size", s.to_string());
        }
        if let Some(f) = free {
            set(&mut out, "free_space", f.to_string());
        }
        for k in ["file_system", "volume_name"] {
            if let Some(v) = tab.get(k) {
                set(&mut out, k, v.as_str().ok_or(format!("{at}: {k} must be a string"))?.to_string());
            }
        }
        if let Some(v) = tab.get("drive_type") {
            match v.as_integer() {
                Some(t @ 0..=6) => set(&mut out, "drive_type", t.to_string()),
                _ => return Err(format!("{at}: drive_type must be 0 to 6 (Win32_LogicalDisk DriveType)")),
            }
        }
        ids.push(id);
    }
    if !ids.iter().any(|d| d == "C:") {
        return Err("[[wmi.disks]]: C: must be listed (the system drive)".into());
    }
    out.push(("wmi.disks".into(), ids.join(",")));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::device::{Device, DeviceId, Template};
    use crate::syncml::{Command, Item, ItemCmd};
    use crate::tree::{Registry, Tree};

    /// 2026-03-02 08:00 UTC.
    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).unwrap()
    }

    /// A device made from the built-in template of `profile` with `extra` laid over it.
    fn device(profile: Profile, extra: &str) -> Device {
        let t = Template::builtin(profile).overlay(&Template::parse(extra, "t.toml").unwrap());
        Device::new(DeviceId::from_seed(1), profile, "https://mdm.example/MDM.svc", "Fleet", &t, now())
    }

    /// (status, Results data, Results format) of one command on a device.
    fn run_on(d: &mut Device, cmd: &str, uri: &str) -> (StatusCode, Option<String>, Option<String>) {
        let mut reg = Registry::new();
        reg.register(WmiBridge);
        let env = d.env(now());
        let mut tree = Tree::new(&reg, &mut d.tree, &env);
        let mut item = Item::target(uri);
        item.data = Some("1".into());
        let ic = ItemCmd { cmd_id: "1".into(), items: vec![item], ..ItemCmd::default() };
        let c = match cmd {
            "Exec" => Command::Exec(ic),
            "Replace" => Command::Replace(ic),
            "Add" => Command::Add(ic),
            "Delete" => Command::Delete(ic),
            _ => Command::Get(ic),
        };
        let out = tree.execute(&c).remove(0);
        let first = out.results.first();
        if let Some(i) = first {
            assert_eq!(i.source.as_deref(), Some(uri), "Results echo the LocURI as sent");
        }
        (out.code, first.and_then(|i| i.data.clone()), first.and_then(|i| i.meta.as_ref()?.format.clone()))
    }

    fn get(d: &mut Device, uri: &str) -> (StatusCode, Option<String>) {
        let (code, data, _) = run_on(d, "Get", uri);
        (code, data)
    }

    fn ok(v: &str) -> (StatusCode, Option<String>) {
        (StatusCode::Ok, Some(v.to_string()))
    }

    fn run(profile: Profile, cmd: &str, uri: &str) -> (StatusCode, Vec<Effect>) {
        let mut reg = Registry::new();
        reg.register(WmiBridge);
        let mut d = device(profile, "");
        let env = d.env(now());
        let mut tree = Tree::new(&reg, &mut d.tree, &env);
        let ic = ItemCmd { cmd_id: "1".into(), items: vec![Item::target(uri)], ..ItemCmd::default() };
        let c = if cmd == "Exec" { Command::Exec(ic) } else { Command::Get(ic) };
        let code = tree.execute(&c)[0].code;
        (code, tree.effects)
    }

    const UNENROLL: &str = "./cimv2/MDM_Client/MDM_Client.DeviceClientID=%22ABC%22/Exec=SendUnenrollRequest";

    #[test]
    fn send_unenroll_request_unenrolls_a_win81_device() {
        let (code, effects) = run(Profile::Win81, "Exec", UNENROLL);
        assert_eq!(code, StatusCode::Ok);
        assert!(matches!(&effects[..], [Effect::Unenroll { reason }] if reason.contains("SendUnenrollRequest")));
    }

    #[test]
    fn the_other_methods_answer_and_update_configuration_asks_for_a_channel() {
        let reset = "./cimv2/MDM_Client/MDM_Client.DeviceClientID=%22ABC%22/Exec=ResetUserPassword";
        assert_eq!(run(Profile::Win81, "Exec", reset), (StatusCode::Ok, vec![]));
        let wns = "./cimv2/MDM_WNSConfiguration/MDM_WNSConfiguration.AppId=%22%7B1%7D%22/Exec=UpdateConfiguration";
        let (code, effects) = run(Profile::Win81, "Exec", wns);
        assert_eq!(code, StatusCode::Ok);
        // The channel is kept with the enrollment's DMClient provider, asked for the AppId.
        assert!(
            matches!(&effects[..], [Effect::RequestChannel { csp: "DMClient", node, app }]
                if node.starts_with("Provider/") && node.ends_with("/Push") && app == "{1}"),
            "{effects:?}"
        );
        let unknown = "./cimv2/MDM_Client/MDM_Client.DeviceClientID=%22ABC%22/Exec=Reboot";
        assert_eq!(run(Profile::Win81, "Exec", unknown).0, StatusCode::NotFound);
        let wrong_class = "./cimv2/MDM_Client/Other.Key=1/Exec=SendUnenrollRequest";
        assert_eq!(run(Profile::Win81, "Exec", wrong_class).0, StatusCode::NotFound);
    }

    #[test]
    fn the_methods_are_windows_8_1_only_and_the_inventory_is_on_both_profiles() {
        assert_eq!(run(Profile::Win10, "Exec", UNENROLL).0, StatusCode::NotFound);
        assert_eq!(run(Profile::Win10, "Get", "./cimv2/MDM_Client").0, StatusCode::NotFound);
        let mut w10 = device(Profile::Win10, "");
        let classes = "Win32_BIOS/Win32_ComputerSystem/Win32_LogicalDisk/Win32_OperatingSystem/Win32_PhysicalMemory";
        assert_eq!(get(&mut w10, "./cimv2"), ok(classes));
        let mut w81 = device(Profile::Win81, "");
        assert_eq!(get(&mut w81, "./cimv2"), ok(&format!("{classes}/MDM_Client/MDM_WNSConfiguration")));
        assert_eq!(get(&mut w81, "./cimv2/Win32_OperatingSystem/Win32_OperatingSystem=@/Version"), ok("6.3.9600"));
        assert_eq!(get(&mut w10, "./cimv2/Win32_Processor").0, StatusCode::NotFound);
    }

    #[test]
    fn fleet_inventory_uris_answer_with_template_values() {
        let mut d = device(Profile::Win10, "");
        // The built-in win10 template: TotalStorage 486188 MB, TotalRAM 16384 MB.
        let size = (486188 * MIB).to_string();
        let free = (486188 * MIB / 5 * 2).to_string();
        for c in ["'C:'", "%22C%3A%22", "\"C:\"", "%27c%3a%27"] {
            let disk = format!("./cimv2/Win32_LogicalDisk/Win32_LogicalDisk.DeviceID={c}");
            assert_eq!(
                run_on(&mut d, "Get", &format!("{disk}/Size")),
                (StatusCode::Ok, Some(size.clone()), Some("int".into()))
            );
            assert_eq!(get(&mut d, &format!("{disk}/FreeSpace")), ok(&free), "{c}");
            assert_eq!(get(&mut d, &format!("{disk}/FileSystem")), ok("NTFS"), "{c}");
        }
        let ram = "./cimV2/Win32_PhysicalMemory/Win32_PhysicalMemory.Tag='Physical%20Memory%200'/Capacity";
        assert_eq!(get(&mut d, ram), ok(&(16384 * MIB).to_string()));
    }

    #[test]
    fn names_are_case_insensitive_and_results_echo_what_was_sent() {
        let mut d = device(Profile::Win10, "");
        let want = ok("Microsoft Windows 11 Enterprise");
        assert_eq!(get(&mut d, "./cimv2/Win32_OperatingSystem/Win32_OperatingSystem=@/Caption"), want);
        assert_eq!(get(&mut d, "./cimV2/win32_operatingsystem/WIN32_OPERATINGSYSTEM=@/caption"), want);
        assert_eq!(get(&mut d, "./Device/CIMV2/Win32_BIOS").0, StatusCode::Ok);
        // Key names and string key values too, as WMI compares them.
        let disk = "./cimv2/win32_logicaldisk/Win32_LogicalDisk.deviceid=%22c:%22/DRIVETYPE";
        assert_eq!(run_on(&mut d, "Get", disk), (StatusCode::Ok, Some("3".into()), Some("int".into())));
    }

    #[test]
    fn class_and_instance_gets_list_their_children() {
        let mut d = device(Profile::Win10, "");
        // Instance paths unescaped, as the "WMI providers supported in Windows" page shows.
        let (code, data, format) = run_on(&mut d, "Get", "./cimv2/Win32_LogicalDisk");
        assert_eq!(
            (code, data.as_deref(), format.as_deref()),
            (StatusCode::Ok, Some("Win32_LogicalDisk.DeviceID=\"C:\""), Some("node"))
        );
        assert_eq!(get(&mut d, "./cimv2/Win32_OperatingSystem"), ok("Win32_OperatingSystem=@"));
        assert_eq!(get(&mut d, "./cimv2/Win32_ComputerSystem"), ok("Win32_ComputerSystem.Name=\"LAPTOP-4F7H2K9Q\""));
        let bios = "Win32_BIOS.Name=\"1.14.1\",SoftwareElementID=\"1.14.1\",SoftwareElementState=3,TargetOperatingSystem=0,Version=\"1.14.1\"";
        assert_eq!(get(&mut d, "./cimv2/Win32_BIOS"), ok(bios));
        // The listed path, percent-encoded, is the instance's LocURI segment.
        let seg = crate::tree::encode_segment(bios);
        assert_eq!(get(&mut d, &format!("./cimv2/Win32_BIOS/{seg}/SerialNumber")), ok("7HX2Q93"));
        assert_eq!(
            get(&mut d, "./cimv2/Win32_LogicalDisk/Win32_LogicalDisk.DeviceID='C:'"),
            ok("Description/DeviceID/DriveType/FileSystem/FreeSpace/Size/VolumeName")
        );
    }

    #[test]
    fn unknown_instances_and_properties_are_404_and_writes_405() {
        let mut d = device(Profile::Win10, "");
        let c = "./cimv2/Win32_LogicalDisk/Win32_LogicalDisk.DeviceID='C:'";
        for uri in [
            "./cimv2/Win32_LogicalDisk/Win32_LogicalDisk.DeviceID='Z:'/Size",
            "./cimv2/Win32_LogicalDisk/Win32_LogicalDisk.DeviceID='Z:'",
            "./cimv2/Win32_LogicalDisk/Win32_BIOS.DeviceID='C:'/Size",
            "./cimv2/Win32_LogicalDisk/Win32_LogicalDisk.Name='C:'/Size",
            "./cimv2/Win32_LogicalDisk/garbage/Size",
            "./cimv2/Win32_PhysicalMemory/Win32_PhysicalMemory.Tag='Physical%20Memory%201'/Capacity",
            "./cimv2/Win32_BIOS/Win32_BIOS=@/SerialNumber",
            &format!("{c}/VolumeSerialNumber"),
            &format!("{c}/Exec=Chkdsk"),
        ] {
            assert_eq!(get(&mut d, uri).0, StatusCode::NotFound, "{uri}");
        }
        for cmd in ["Replace", "Add", "Delete"] {
            assert_eq!(run_on(&mut d, cmd, &format!("{c}/VolumeName")).0, StatusCode::CommandNotAllowed, "{cmd}");
        }
        assert_eq!(
            run_on(&mut d, "Replace", "./cimv2/Win32_LogicalDisk/Win32_LogicalDisk.DeviceID='Z:'/VolumeName").0,
            StatusCode::NotFound
        );
        // Nothing was stored.
        assert_eq!(get(&mut d, &format!("{c}/VolumeName")), ok(""));
    }

    #[test]
    fn values_agree_with_devdetail_and_come_from_the_wmi_table() {
        let extra = r#"
[devdetail.Ext.Microsoft]
TotalRAM = 8193
[behaviour]
utc_offset_minutes = 60
[wmi]
domain = "CONTOSO"
install_date = 2024-05-14T09:12:00Z
last_boot = "2026-03-02T06:00:00Z"
bios_release_date = 2023-11-08
memory_modules = 2
memory_speed = 5600
[[wmi.disks]]
device_id = "C:"
free_space = 1000
volume_name = "Windows"
[[wmi.disks]]
device_id = "d:"
size = 2000000000
drive_type = 2
file_system = "FAT32"
"#;
        let mut d = device(Profile::Win10, extra);
        let cs = "./cimv2/Win32_ComputerSystem/Win32_ComputerSystem.Name='LAPTOP-4F7H2K9Q'";
        assert_eq!(get(&mut d, &format!("{cs}/Manufacturer")), ok("Dell Inc."));
        assert_eq!(get(&mut d, &format!("{cs}/Model")), ok("Latitude 7440"));
        assert_eq!(get(&mut d, &format!("{cs}/Domain")), ok("CONTOSO"));
        assert_eq!(
            run_on(&mut d, "Get", &format!("{cs}/PartOfDomain")),
            (StatusCode::Ok, Some("true".into()), Some("bool".into()))
        );
        assert_eq!(get(&mut d, &format!("{cs}/TotalPhysicalMemory")), ok(&(8193 * MIB).to_string()));
        assert_eq!(get(&mut d, &format!("{cs}/SystemType")), ok("x64-based PC"));
        let os = "./cimv2/Win32_OperatingSystem/Win32_OperatingSystem=@";
        assert_eq!(get(&mut d, &format!("{os}/Version")), ok("10.0.22631"));
        assert_eq!(get(&mut d, &format!("{os}/BuildNumber")), ok("22631"));
        assert_eq!(get(&mut d, &format!("{os}/OSArchitecture")), ok("64-bit"));
        assert_eq!(get(&mut d, &format!("{os}/InstallDate")), ok("20240514101200.000000+060"));
        assert_eq!(get(&mut d, &format!("{os}/LastBootUpTime")), ok("20260302070000.000000+060"));
        assert_eq!(get(&mut d, &format!("{os}/LocalDateTime")), ok("20260302090000.000000+060"));
        assert_eq!(get(&mut d, &format!("{os}/OperatingSystemSKU")), ok("4"));
        assert_eq!(get(&mut d, &format!("{os}/CSName")), ok("LAPTOP-4F7H2K9Q"));
        // Two modules share TotalRAM.
        let mem = |i: u32, p: &str| {
            format!("./cimv2/Win32_PhysicalMemory/Win32_PhysicalMemory.Tag=%22Physical%20Memory%20{i}%22/{p}")
        };
        let a: u64 = get(&mut d, &mem(0, "Capacity")).1.unwrap().parse().unwrap();
        let b: u64 = get(&mut d, &mem(1, "Capacity")).1.unwrap().parse().unwrap();
        assert_eq!(a + b, 8193 * MIB);
        assert_eq!(get(&mut d, &mem(1, "Speed")), ok("5600"));
        assert_eq!(
            get(&mut d, "./cimv2/Win32_BIOS"),
            ok(
                "Win32_BIOS.Name=\"1.14.1\",SoftwareElementID=\"1.14.1\",SoftwareElementState=3,TargetOperatingSystem=0,Version=\"1.14.1\""
            )
        );
        let bios = "./cimv2/Win32_BIOS/Win32_BIOS.Name=%221.14.1%22,SoftwareElementID=%221.14.1%22,SoftwareElementState=3,TargetOperatingSystem=0,Version=%221.14.1%22";
        assert_eq!(get(&mut d, &format!("{bios}/ReleaseDate")), ok("20231108010000.000000+060"));
        assert_eq!(get(&mut d, &format!("{bios}/Manufacturer")), ok("Dell Inc."));
        assert_eq!(get(&mut d, &format!("{bios}/SMBIOSBIOSVersion")), ok("1.14.1"));
        // Disks: the list as given, C: sized from TotalStorage.
        assert_eq!(
            get(&mut d, "./cimv2/Win32_LogicalDisk"),
            ok("Win32_LogicalDisk.DeviceID=\"C:\"/Win32_LogicalDisk.DeviceID=\"D:\"")
        );
        let disk = |id: &str, p: &str| format!("./cimv2/Win32_LogicalDisk/Win32_LogicalDisk.DeviceID='{id}'/{p}");
        assert_eq!(get(&mut d, &disk("C:", "Size")), ok(&(486188 * MIB).to_string()));
        assert_eq!(get(&mut d, &disk("C:", "FreeSpace")), ok("1000"));
        assert_eq!(get(&mut d, &disk("C:", "VolumeName")), ok("Windows"));
        assert_eq!(get(&mut d, &disk("D:", "Description")), ok("Removable Disk"));
        assert_eq!(get(&mut d, &disk("D:", "FileSystem")), ok("FAT32"));
        assert_eq!(get(&mut d, &disk("D:", "FreeSpace")), ok("800000000"));
        // DevDetail changed by the server shows in WMI too: one source.
        d.tree.set_value("DevDetail/Ext/Microsoft/DeviceName", "RENAMED");
        assert_eq!(
            get(&mut d, "./cimv2/Win32_ComputerSystem/Win32_ComputerSystem.Name=%22renamed%22/Name"),
            ok("RENAMED")
        );
    }

    #[test]
    fn object_paths_parse_in_every_spelling() {
        let p = |s: &str| ObjectPath::parse(s);
        let keys = |k: &[(&str, &str)]| Some(k.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect());
        assert_eq!(
            p("Win32_OperatingSystem=@"),
            Some(ObjectPath { class: "Win32_OperatingSystem".into(), keys: None })
        );
        assert_eq!(p("Win32_LogicalDisk.DeviceID=\"C:\"").unwrap().keys, keys(&[("DeviceID", "C:")]));
        assert_eq!(p("Win32_LogicalDisk.DeviceID='C:'").unwrap().keys, keys(&[("DeviceID", "C:")]));
        assert_eq!(p("Win32_LogicalDisk=\"C:\"").unwrap().keys, keys(&[("", "C:")]));
        assert_eq!(p("X.A=\"a\\\"b\",B=3").unwrap().keys, keys(&[("A", "a\"b"), ("B", "3")]));
        for bad in ["", "NoKeys", ".K=1", "X.K=\"open", "X.=1", "X.K=\"a\"junk", "X.K="] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn wmi_table_errors_name_the_key() {
        let t = |text: &str| Template::parse(text, "t.toml").map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(t("[wmi]\ndomain = \"X\"\nmemory_modules = 2"), Ok(()));
        for (text, want) in [
            ("[wmi]\ncolour = 1", "t.toml:2:1: [wmi] unexpected key \"colour\""),
            ("[wmi]\nmemory_speed = \"fast\"", "[wmi] memory_speed must be a whole number"),
            ("[wmi]\nmemory_modules = 65", "[wmi] memory_modules must be 1 to 64"),
            ("[wmi]\ninstall_date = \"last year\"", "[wmi] install_date must be a date"),
            ("[[wmi.disks]]\ndevice_id = \"D:\"\nsize = 5", "C: must be listed"),
            ("[[wmi.disks]]\ndevice_id = \"D:\"", "#1: size is missing"),
            ("[[wmi.disks]]\ndevice_id = \"CC\"", "not a drive letter"),
            ("[[wmi.disks]]\ndevice_id = \"C:\"\nsize = 5\nfree_space = 6", "free_space 6 is more than size 5"),
            ("[[wmi.disks]]\ndevice_id = \"C:\"\nlabel = \"x\"", "unexpected key \"label\""),
        ] {
            let e = t(text).unwrap_err();
            assert!(e.contains(want), "{e:?} does not contain {want:?}");
        }
    }
}
