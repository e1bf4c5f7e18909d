//! Who each device of a fleet is: its DeviceID, SMBIOS serial, host name, MAC, enrolled user,
//! time zone, hardware, OS patch level and installed apps, as a plain function of the fleet
//! seed and the device index.
//!
//! Nothing here is stored: [`Identity::derive`] computes a device's identity on demand, the
//! same for the same `(seed, index)` whichever process, shard (`--shard i/n`) or order asks,
//! and [`device_template`] turns it into the device's own [`Template`] (the values written
//! into its tree when it is created). A fleet of a million devices holds no identity table.
//!
//! What an identity holds, and where it comes from:
//!
//! | value | how |
//! |---|---|
//! | DeviceID | 32 uppercase hex digits, as Windows sends it (SyncHdr Source, `./DevInfo/DevId`) |
//! | serial | in the maker's style: Dell service tags (7), HP `5CG`/`CZC` + year, week and 4 (10), Lenovo `PF`/`MJ` + 6, Surface 12 digits, Hyper-V `0000-...` |
//! | host name | Windows' default names: `DESKTOP-` + 7 or `LAPTOP-` + 8 uppercase letters and digits (15 characters, the NetBIOS limit) |
//! | MAC | an Intel or Realtek OUI (IEEE registry: `40-A3-CC`, `E4-C7-67`, `E4-F8-9C`, `00-1B-21` Intel Corporate, `00-E0-4C` Realtek) and 3 drawn bytes; DevDetail `Ext/WLANMACAddress` as 12 hex digits |
//! | user | a display name from 64 × 64 first and last names, UPN `first.last@<domain>`; unique across each block of 4,096 devices, then `first.last2@...` |
//! | time zone | weighted IANA zones ([`Population::timezones`]; default: a spread over the Americas, Europe, Asia and Oceania) |
//! | hardware | a weighted list of current business laptops or desktops ([`LAPTOPS`], [`DESKTOPS`]) |
//! | OS build | the template's build (`10.0.19045`, `10.0.22631`, `10.0.26100`) with the revision of one of its monthly cumulative updates, most devices on the latest ones, a tail months behind |
//! | apps | each of [`APPS`] with its own share of devices |
//!
//! # Cost
//!
//! [`Identity::derive`] draws about 40 numbers from a SplitMix64 stream and builds seven short
//! strings: 0.7 to 0.9 µs per identity optimised, 3.6 µs in a debug build (the `derive_is_cheap`
//! test prints both costs, on one core of a shared machine); an `Identity` is 176 bytes plus
//! about 120 bytes of strings. [`device_template`] clones the base template (its `[nodes]` and
//! `[[apps]]` included): 6 to 8 µs with the shipped laptop template, once per device created.

use chrono::{NaiveDate, TimeZone as _};
use chrono_tz::{OffsetComponents as _, Tz};

use crate::device::{DeviceId, Template, TemplateApp};
use crate::tree::Profile;

/// One step of SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
/// generators", 2014): a 64-bit mix good enough to derive independent streams from a seed.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key of device `index` of the fleet of `seed`: every draw of its identity and behaviour
/// starts from it.
pub(crate) fn device_key(seed: u64, index: u64) -> u64 {
    mix64(mix64(seed ^ 0x6d64_6d73_696d_666c) ^ index)
}

/// A number for `(key, what, tag)`: independent draws for independent questions.
pub(crate) fn hash(key: u64, what: u64, tag: u64) -> u64 {
    mix64(mix64(key ^ tag.wrapping_mul(0x9e37_79b9_7f4a_7c15)) ^ what)
}

/// A SplitMix64 stream: small, fast, and the same on every platform (the normal draw uses only
/// additions and a square root, which IEEE 754 rounds exactly).
#[derive(Debug, Clone)]
pub(crate) struct Draws(u64);

impl Draws {
    pub(crate) fn new(seed: u64) -> Draws {
        Draws(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// A whole number below `n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// A whole number from `lo` to `hi`, both included.
    pub(crate) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo) as u64 + 1) as i64
    }

    /// A number in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A standard normal draw, approximated by the sum of four uniforms (Irwin-Hall, scaled to
    /// variance 1): bounded at ±3.46, which keeps times of day in their day.
    pub(crate) fn normal(&mut self) -> f64 {
        let s = self.unit() + self.unit() + self.unit() + self.unit();
        (s - 2.0) * 3f64.sqrt()
    }

    /// The index of an entry picked by weight (the first when all weights are 0).
    pub(crate) fn weighted(&mut self, weights: impl Iterator<Item = u32> + Clone) -> usize {
        let total: u64 = weights.clone().map(u64::from).sum();
        let mut at = self.below(total);
        for (i, w) in weights.enumerate() {
            if at < u64::from(w) {
                return i;
            }
            at -= u64::from(w);
        }
        0
    }

    fn alnum(&mut self, n: usize, out: &mut String) {
        const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        for _ in 0..n {
            out.push(ALNUM[self.below(ALNUM.len() as u64) as usize] as char);
        }
    }

    fn digits(&mut self, n: usize, out: &mut String) {
        for _ in 0..n {
            out.push((b'0' + self.below(10) as u8) as char);
        }
    }
}

/// How a maker writes its serial numbers (SMBIOS System Serial Number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialStyle {
    /// A Dell service tag: 7 letters and digits.
    Dell,
    /// HP: a 3-character site prefix, a year digit, two week digits, then 4 letters and digits.
    Hp(&'static str),
    /// Lenovo: a 2-letter prefix and 6 letters and digits.
    Lenovo(&'static str),
    /// Microsoft Surface: 12 digits starting with 0.
    Surface,
    /// A Hyper-V virtual machine (a Cloud PC): `0000-` and groups of digits.
    HyperV,
    /// Anything else: 10 letters and digits.
    Generic,
}

impl SerialStyle {
    /// The style of a maker's name as DevInfo `Man` writes it.
    pub fn of_maker(maker: &str) -> SerialStyle {
        let m = maker.to_ascii_lowercase();
        if m.starts_with("dell") {
            SerialStyle::Dell
        } else if m == "hp" || m.starts_with("hewlett") {
            SerialStyle::Hp("5CG")
        } else if m.starts_with("lenovo") {
            SerialStyle::Lenovo("PF")
        } else if m.starts_with("microsoft") {
            SerialStyle::Surface
        } else {
            SerialStyle::Generic
        }
    }

    fn draw(self, r: &mut Draws) -> String {
        let mut s = String::with_capacity(32);
        match self {
            SerialStyle::Dell => r.alnum(7, &mut s),
            SerialStyle::Hp(prefix) => {
                s.push_str(prefix);
                s.push((b'2' + r.below(4) as u8) as char);
                s.push_str(&format!("{:02}", r.range(1, 52)));
                r.alnum(4, &mut s);
            }
            SerialStyle::Lenovo(prefix) => {
                s.push_str(prefix);
                r.alnum(6, &mut s);
            }
            SerialStyle::Surface => {
                s.push('0');
                r.digits(11, &mut s);
            }
            SerialStyle::HyperV => {
                s.push_str("0000-00");
                r.digits(2, &mut s);
                for _ in 0..4 {
                    s.push('-');
                    r.digits(4, &mut s);
                }
                s.push('-');
                r.digits(2, &mut s);
            }
            SerialStyle::Generic => r.alnum(10, &mut s),
        }
        s
    }
}

/// One hardware model a fleet device may be: what DevInfo and DevDetail say about it.
#[derive(Debug, PartialEq, Eq)]
pub struct Hardware {
    /// DevInfo `Man` and DevDetail `OEM` (the SMBIOS manufacturer).
    pub manufacturer: &'static str,
    /// DevInfo `Mod` (the SMBIOS product name; Lenovo reports its machine type).
    pub model: &'static str,
    /// DevDetail `DevTyp` (the marketing name).
    pub family: &'static str,
    /// DevDetail `FwV` and `HwV` (the BIOS version).
    pub firmware: &'static str,
    /// How its serial numbers look.
    pub serial: SerialStyle,
    /// Its share among the models of its form factor.
    pub weight: u32,
}

const fn hw(
    manufacturer: &'static str,
    model: &'static str,
    family: &'static str,
    firmware: &'static str,
    serial: SerialStyle,
    weight: u32,
) -> Hardware {
    Hardware { manufacturer, model, family, firmware, serial, weight }
}

/// The laptops of a business fleet, by weight.
pub const LAPTOPS: &[Hardware] = &[
    hw("Dell Inc.", "Latitude 7440", "Latitude 7440", "1.14.1", SerialStyle::Dell, 18),
    hw("Dell Inc.", "Latitude 5540", "Latitude 5540", "1.12.0", SerialStyle::Dell, 12),
    hw("LENOVO", "21HMCTO1WW", "ThinkPad T14s Gen 4", "R2EET41W (1.22 )", SerialStyle::Lenovo("PF"), 16),
    hw("LENOVO", "21AH00FGUS", "ThinkPad T14 Gen 3", "R1XET50W (1.32 )", SerialStyle::Lenovo("PF"), 10),
    hw("HP", "HP EliteBook 840 G10", "HP EliteBook 840 G10", "V70 Ver. 01.06.01", SerialStyle::Hp("5CG"), 18),
    hw("HP", "HP ProBook 450 G9", "HP ProBook 450 G9", "U77 Ver. 01.11.00", SerialStyle::Hp("5CD"), 10),
    hw("Microsoft Corporation", "Surface Laptop 5", "Surface Laptop 5", "21.102.143", SerialStyle::Surface, 9),
    hw("Microsoft Corporation", "Surface Pro 9", "Surface Pro 9", "19.101.143", SerialStyle::Surface, 7),
];

/// The desktops of a business fleet (Cloud PCs included), by weight.
pub const DESKTOPS: &[Hardware] = &[
    hw("Dell Inc.", "OptiPlex 7010", "OptiPlex 7010", "1.9.0", SerialStyle::Dell, 24),
    hw("Dell Inc.", "OptiPlex 5000", "OptiPlex 5000", "1.21.0", SerialStyle::Dell, 10),
    hw(
        "HP",
        "HP EliteDesk 800 G6 Desktop Mini PC",
        "HP EliteDesk 800 G6 Desktop Mini PC",
        "S21 Ver. 02.18.00",
        SerialStyle::Hp("CZC"),
        20,
    ),
    hw("HP", "HP ProDesk 400 G7 Microtower PC", "HP ProDesk 400 G7", "S11 Ver. 02.14.00", SerialStyle::Hp("CZC"), 12),
    hw("LENOVO", "11T3000GUS", "ThinkCentre M70q Gen 3", "M3JKT3CA", SerialStyle::Lenovo("MJ"), 16),
    hw(
        "Microsoft Corporation",
        "Virtual Machine",
        "Virtual Machine",
        "Hyper-V UEFI Release v4.1",
        SerialStyle::HyperV,
        8,
    ),
];

/// The OUIs of WLAN and Ethernet adapters (IEEE MA-L registry), by weight.
const OUIS: &[([u8; 3], u32)] = &[
    ([0x40, 0xA3, 0xCC], 30), // Intel Corporate
    ([0xE4, 0xC7, 0x67], 25), // Intel Corporate
    ([0xE4, 0xF8, 0x9C], 15), // Intel Corporate
    ([0x00, 0x1B, 0x21], 10), // Intel Corporate
    ([0x00, 0xE0, 0x4C], 20), // Realtek Semiconductor Corp.
];

/// The monthly cumulative updates of the Windows builds a fleet runs: `(build, revisions)`,
/// oldest first (the revision after the build in `10.0.<build>.<revision>`, as `winver` and
/// DevDetail SwV show it), from Microsoft's update history pages.
const BUILDS: &[(u32, &[u32])] = &[
    // Windows 10 22H2, January 2024 to October 2025.
    (
        19045,
        &[
            3930, 4046, 4170, 4291, 4412, 4529, 4651, 4780, 4894, 5011, 5131, 5247, 5371, 5487, 5608, 5737, 5854, 5965,
            6093, 6216, 6332, 6456,
        ],
    ),
    // Windows 11 23H2, January 2024 to October 2025.
    (
        22631,
        &[
            3007, 3155, 3296, 3447, 3593, 3737, 3880, 4037, 4169, 4317, 4460, 4602, 4751, 4890, 5039, 5189, 5335, 5472,
            5624, 5768, 5909, 6060,
        ],
    ),
    // Windows 11 24H2, October 2024 to October 2025.
    (26100, &[2033, 2314, 2605, 2894, 3194, 3476, 3775, 4061, 4349, 4652, 4946, 6584, 6899]),
];

/// The builds of a template that names none, by weight.
const BUILD_SHARES: &[(u32, u32)] = &[(19045, 30), (22631, 30), (26100, 40)];

/// How far behind the latest update a device is: the weight of 0, 1, 2... months behind.
const PATCH_LAG: &[u32] = &[40, 24, 13, 8, 5, 3, 2, 1, 1, 1, 1, 1];

/// An app installed on a share of the fleet (EnterpriseAppManagement inventory of
/// EnterpriseID 4000000001), named after Microsoft's fictitious companies.
#[derive(Debug, PartialEq, Eq)]
pub struct FleetApp {
    /// The product ID, in braces.
    pub product_id: &'static str,
    /// Inventory `Title`.
    pub title: &'static str,
    /// Inventory `Publisher`.
    pub publisher: &'static str,
    /// Inventory `Version`.
    pub version: &'static str,
    /// Devices that have it, in thousandths.
    pub per_mille: u32,
}

/// The apps a fleet device may have on top of its template's.
pub const APPS: &[FleetApp] = &[
    FleetApp {
        product_id: "{6F1D3C2A-8B4E-4F5A-9C7D-2E8B1A4F6C3D}",
        title: "Contoso Timesheets",
        publisher: "Contoso Ltd.",
        version: "1.4.2.0",
        per_mille: 600,
    },
    FleetApp {
        product_id: "{A3E5B7C9-1D2F-4A6B-8C0E-5F7A9B1C3D5E}",
        title: "Contoso VPN Client",
        publisher: "Contoso Ltd.",
        version: "5.2.0.0",
        per_mille: 500,
    },
    FleetApp {
        product_id: "{2C4E6A8B-0D1F-4B3C-9E5A-7B9D1F3A5C7E}",
        title: "Litware Reader",
        publisher: "Litware, Inc.",
        version: "11.0.4.0",
        per_mille: 450,
    },
    FleetApp {
        product_id: "{9B7D5F3A-1C2E-4D6F-8A0B-3C5E7A9B1D2F}",
        title: "Fabrikam CRM",
        publisher: "Fabrikam, Inc.",
        version: "8.1.3.0",
        per_mille: 350,
    },
    FleetApp {
        product_id: "{4D6F8A0B-2C3E-4F5A-9B1D-6E8A0C2E4F6A}",
        title: "Tailspin Helpdesk",
        publisher: "Tailspin Toys",
        version: "4.6.1.0",
        per_mille: 300,
    },
    FleetApp {
        product_id: "{7E9A1B3C-5D6F-4A8B-9C0D-1E3F5A7B9C1D}",
        title: "Adventure Works Travel",
        publisher: "Adventure Works",
        version: "1.0.9.0",
        per_mille: 250,
    },
    FleetApp {
        product_id: "{3F5A7B9C-1D2E-4F6A-8B0C-9D1E3F5A7B9C}",
        title: "Northwind Inventory",
        publisher: "Northwind Traders",
        version: "2.0.7.0",
        per_mille: 200,
    },
    FleetApp {
        product_id: "{8A0C2E4F-6A7B-4C9D-8E1F-2A4C6E8A0B2C}",
        title: "Woodgrove Payroll",
        publisher: "Woodgrove Bank",
        version: "3.3.0.0",
        per_mille: 100,
    },
];

/// The EnterpriseID the fleet's apps are installed for.
pub const APPS_ENTERPRISE_ID: &str = "4000000001";

#[rustfmt::skip]
const FIRST_NAMES: [&str; 64] = [
    "Aisha", "Alejandro", "Amelia", "Ana", "Andrei", "Anna", "Arjun", "Ben", "Camille", "Carlos", "Chen", "Chloe",
    "Daniel", "David", "Elena", "Emma", "Fatima", "Felix", "Hana", "Hannah", "Hiroshi", "Ines", "Ingrid", "Isabel",
    "Ivan", "Jakub", "James", "Javier", "Jin", "Julia", "Kenji", "Laura", "Leila", "Liam", "Lucas", "Lukas", "Maria",
    "Mateo", "Mei", "Mohammed", "Nadia", "Nils", "Noah", "Olga", "Omar", "Paul", "Pedro", "Priya", "Rahul", "Rosa",
    "Sakura", "Samuel", "Sara", "Sofia", "Sven", "Tariq", "Thomas", "Valentina", "Victor", "Wei", "Yara", "Yuki",
    "Zainab", "Zoe",
];

#[rustfmt::skip]
const LAST_NAMES: [&str; 64] = [
    "Adams", "Ahmed", "Almeida", "Andersen", "Bauer", "Becker", "Brown", "Castro", "Chen", "Costa", "Dubois",
    "Fischer", "Garcia", "Gonzalez", "Gupta", "Hansen", "Hoffmann", "Ito", "Jansen", "Johnson", "Kaur", "Khan", "Kim",
    "Kowalski", "Kumar", "Larsen", "Lee", "Lopez", "Martin", "Meyer", "Moreau", "Muller", "Nakamura", "Nguyen",
    "Novak", "Okafor", "Olsen", "Park", "Patel", "Perez", "Petrov", "Rossi", "Sanchez", "Santos", "Sato", "Schmidt",
    "Silva", "Singh", "Smith", "Suzuki", "Tanaka", "Taylor", "Thomas", "Wagner", "Walker", "Wang", "Weber",
    "Williams", "Wilson", "Wong", "Yamamoto", "Yilmaz", "Zhang", "Zimmermann",
];

/// The time zones of a fleet when the mix names none: where business devices are, by weight
/// (percentages).
pub const DEFAULT_TIMEZONES: &[(Tz, u32)] = &[
    (chrono_tz::America::New_York, 16),
    (chrono_tz::America::Chicago, 8),
    (chrono_tz::America::Denver, 3),
    (chrono_tz::America::Los_Angeles, 9),
    (chrono_tz::America::Toronto, 3),
    (chrono_tz::America::Mexico_City, 3),
    (chrono_tz::America::Sao_Paulo, 4),
    (chrono_tz::Europe::London, 9),
    (chrono_tz::Europe::Berlin, 8),
    (chrono_tz::Europe::Paris, 6),
    (chrono_tz::Europe::Madrid, 3),
    (chrono_tz::Europe::Warsaw, 2),
    (chrono_tz::Asia::Kolkata, 7),
    (chrono_tz::Asia::Tokyo, 5),
    (chrono_tz::Asia::Shanghai, 4),
    (chrono_tz::Asia::Singapore, 3),
    (chrono_tz::Asia::Dubai, 2),
    (chrono_tz::Australia::Sydney, 3),
    (chrono_tz::Africa::Johannesburg, 2),
];

/// Who a fleet is, beyond its templates: the mix file's `[identity]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Population {
    /// The domain of the users' UPNs (`contoso.com`).
    pub domain: String,
    /// The devices' time zones with their weights.
    pub timezones: Vec<(Tz, u32)>,
    /// Install the fleet's [`APPS`] on their shares of devices (`false`: the templates' apps only).
    pub apps: bool,
}

impl Default for Population {
    fn default() -> Population {
        Population { domain: "contoso.com".into(), timezones: DEFAULT_TIMEZONES.to_vec(), apps: true }
    }
}

/// How a template's devices are built: laptop or desktop, and whose hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Form {
    /// A laptop (sleeps at night; hardware from [`LAPTOPS`]), else a desktop ([`DESKTOPS`]).
    pub laptop: bool,
    /// Keep the template's DevInfo `Man`/`Mod` and DevDetail `OEM`/`DevTyp`/`FwV`/`HwV`
    /// instead of drawing a model.
    pub keep_hardware: bool,
}

impl Form {
    /// The form a template suggests: a laptop when its device name is `LAPTOP-...`, it reports
    /// a battery (`DeviceStatus/Battery` in `[nodes]`) or it is a Windows 8.1 tablet; the mix
    /// file's `laptop` key says it for sure.
    pub fn of(template: &Template) -> Form {
        let name = template.devdetail.get("Ext/Microsoft/DeviceName").map_or("", String::as_str);
        let laptop = name.starts_with("LAPTOP-")
            || template.nodes.keys().any(|k| k.contains("/DeviceStatus/Battery/"))
            || template.profile == Some(Profile::Win81);
        Form { laptop, keep_hardware: false }
    }
}

/// One device's identity (see the module docs). Small and computed on demand: the runner asks
/// for it when it creates the device and whenever it needs the device's time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The device's index in the fleet (0-based).
    pub index: u64,
    /// The DeviceID.
    pub device_id: DeviceId,
    /// A laptop (else a desktop).
    pub laptop: bool,
    /// The hardware model; `None` keeps the template's.
    pub hardware: Option<&'static Hardware>,
    /// DevDetail `Ext/Microsoft/SMBIOSSerialNumber`.
    pub serial: String,
    /// DevDetail `Ext/Microsoft/DeviceName` and `DNSComputerName`.
    pub hostname: String,
    /// The WLAN adapter's MAC address.
    pub mac: [u8; 6],
    /// The enrolled user's display name (`Aisha Kim`).
    pub display_name: String,
    /// The enrolled user's UPN (`aisha.kim@contoso.com`): the e-mail address of enrollment.
    pub upn: String,
    /// The device's time zone.
    pub timezone: Tz,
    /// DevDetail `SwV` (`10.0.22631.4460`); `None` keeps the template's (a build this module has
    /// no update history of, such as Windows 8.1's `6.3.9600`).
    pub os_build: Option<String>,
    /// The [`APPS`] installed, one bit each.
    pub apps: u16,
}

/// The identity of device `index` of the fleet of `seed` built from `template`, with the
/// default [`Population`] and the form the template suggests ([`Form::of`]).
pub fn identity(seed: u64, index: u64, template: &Template) -> Identity {
    Identity::derive(seed, index, template, Form::of(template), &Population::default())
}

impl Identity {
    /// The identity of device `index` of the fleet of `seed`: a plain function of its
    /// arguments (the same device gets the same identity in every process and shard).
    pub fn derive(seed: u64, index: u64, template: &Template, form: Form, population: &Population) -> Identity {
        let key = device_key(seed, index);
        let mut r = Draws::new(hash(key, 0, 0x1d));
        let hex = format!("{:016X}{:016X}", r.next(), r.next());
        let device_id = DeviceId::parse(&hex).unwrap_or_else(|_| DeviceId::from_seed(key));
        let hardware = if form.keep_hardware {
            None
        } else {
            let list = if form.laptop { LAPTOPS } else { DESKTOPS };
            list.get(r.weighted(list.iter().map(|h| h.weight)))
        };
        let style = match hardware {
            Some(h) => h.serial,
            None => SerialStyle::of_maker(template.devinfo.get("Man").map_or("", String::as_str)),
        };
        let serial = style.draw(&mut r);
        let mut hostname = String::with_capacity(15);
        if form.laptop {
            hostname.push_str("LAPTOP-");
            r.alnum(8, &mut hostname);
        } else {
            hostname.push_str("DESKTOP-");
            r.alnum(7, &mut hostname);
        }
        let oui = OUIS[r.weighted(OUIS.iter().map(|o| o.1))].0;
        let low = r.next();
        let mac = [oui[0], oui[1], oui[2], (low >> 16) as u8, (low >> 8) as u8, low as u8];
        let (display_name, upn) = user(seed, index, &population.domain);
        let timezone = match population.timezones.as_slice() {
            [] => chrono_tz::UTC,
            zones => zones[r.weighted(zones.iter().map(|z| z.1))].0,
        };
        let os_build = os_build(template.devdetail.get("SwV").map(String::as_str), &mut r);
        let mut apps = 0u16;
        for (i, app) in APPS.iter().enumerate() {
            if r.below(1000) < u64::from(app.per_mille) && population.apps {
                apps |= 1 << i;
            }
        }
        Identity {
            index,
            device_id,
            laptop: form.laptop,
            hardware,
            serial,
            hostname,
            mac,
            display_name,
            upn,
            timezone,
            os_build,
            apps,
        }
    }

    /// The MAC as DevDetail `Ext/WLANMACAddress` gives it: 12 uppercase hex digits.
    pub fn mac_hex(&self) -> String {
        hex::encode_upper(self.mac)
    }

    /// The [`APPS`] this device has.
    pub fn fleet_apps(&self) -> impl Iterator<Item = &'static FleetApp> + '_ {
        APPS.iter().enumerate().filter(|(i, _)| self.apps & (1 << i) != 0).map(|(_, a)| a)
    }

    /// The offset from UTC of the device's time zone outside daylight-saving time, in minutes
    /// (what the `utc_offset_minutes` setting, and with it DevDetail `LocalTime`, says).
    pub fn standard_offset_minutes(&self) -> i64 {
        let reference = NaiveDate::from_ymd_opt(2026, 1, 15).and_then(|d| d.and_hms_opt(12, 0, 0)).unwrap_or_default();
        self.timezone.offset_from_utc_datetime(&reference).base_utc_offset().num_minutes()
    }
}

/// The display name and UPN of device `index`'s user: a permutation of the 4,096 name pairs
/// keyed by the seed, so devices of one block of 4,096 never share a user.
fn user(seed: u64, index: u64, domain: &str) -> (String, String) {
    let key = mix64(seed ^ 0x7573_6572);
    let mut x = (index & 0xfff) as u32;
    // Each step is a bijection of 0..4096: odd multiplication, xor with a right shift, addition.
    x = x.wrapping_mul((key as u32) | 1) & 0xfff;
    x ^= x >> 6;
    x = x.wrapping_mul(((key >> 32) as u32) | 1) & 0xfff;
    x ^= x >> 5;
    x = x.wrapping_add((key >> 20) as u32) & 0xfff;
    let first = FIRST_NAMES[(x & 63) as usize];
    let last = LAST_NAMES[(x >> 6) as usize];
    let block = index >> 12;
    let suffix = if block == 0 { String::new() } else { (block + 1).to_string() };
    let display = format!("{first} {last}");
    let upn = format!("{}.{}{suffix}@{domain}", first.to_ascii_lowercase(), last.to_ascii_lowercase());
    (display, upn)
}

/// DevDetail SwV with a drawn patch level: the template's build when this module knows its
/// updates, a drawn build when the template names none, `None` (keep) otherwise.
fn os_build(template_swv: Option<&str>, r: &mut Draws) -> Option<String> {
    let build = match template_swv.map(str::trim) {
        None | Some("") => BUILD_SHARES[r.weighted(BUILD_SHARES.iter().map(|b| b.1))].0,
        Some(swv) => {
            let mut parts = swv.split('.');
            let (Some("10"), Some("0"), Some(b)) = (parts.next(), parts.next(), parts.next()) else { return None };
            b.parse().ok()?
        }
    };
    let (_, revisions) = BUILDS.iter().find(|(b, _)| *b == build)?;
    let lags = &PATCH_LAG[..PATCH_LAG.len().min(revisions.len())];
    let lag = r.weighted(lags.iter().copied());
    Some(format!("10.0.{build}.{}", revisions[revisions.len() - 1 - lag]))
}

/// The template device `id` is created from: `base` with its patterns expanded and its
/// `[nodes]` choices picked for the DeviceID ([`Template::for_device`]), then the identity's
/// values laid on top (they win over the template's for the same node): DevInfo `Man`/`Mod`
/// and DevDetail `OEM`/`DevTyp`/`FwV`/`HwV` (unless the template keeps its hardware), `SwV`,
/// `Ext/Microsoft/DeviceName`, `DNSComputerName` (Windows 10 and 11), `SMBIOSSerialNumber`,
/// `Ext/WLANMACAddress`, the `timezone` and `utc_offset_minutes` settings, and the identity's
/// apps after the template's `[[apps]]`.
pub fn device_template(id: &Identity, base: &Template) -> Template {
    let mut t = base.for_device(&id.device_id);
    if let Some(h) = id.hardware {
        t.devinfo.insert("Man".into(), h.manufacturer.into());
        t.devinfo.insert("Mod".into(), h.model.into());
        for (k, v) in [("OEM", h.manufacturer), ("DevTyp", h.family), ("FwV", h.firmware), ("HwV", h.firmware)] {
            t.devdetail.insert(k.into(), v.into());
        }
    }
    if let Some(swv) = &id.os_build {
        t.devdetail.insert("SwV".into(), swv.clone());
    }
    t.devdetail.insert("Ext/Microsoft/DeviceName".into(), id.hostname.clone());
    if t.profile != Some(Profile::Win81) || t.devdetail.contains_key("Ext/Microsoft/DNSComputerName") {
        t.devdetail.insert("Ext/Microsoft/DNSComputerName".into(), id.hostname.clone());
    }
    t.devdetail.insert("Ext/Microsoft/SMBIOSSerialNumber".into(), id.serial.clone());
    t.devdetail.insert("Ext/WLANMACAddress".into(), id.mac_hex());
    t.behaviour.0.insert("timezone".into(), id.timezone.name().into());
    t.behaviour.0.insert("utc_offset_minutes".into(), id.standard_offset_minutes().to_string());
    for app in id.fleet_apps() {
        t.apps
            .retain(|a| !(a.enterprise_id == APPS_ENTERPRISE_ID && a.product_id.eq_ignore_ascii_case(app.product_id)));
        t.apps.push(TemplateApp {
            enterprise_id: APPS_ENTERPRISE_ID.into(),
            product_id: app.product_id.into(),
            version: app.version.into(),
            title: app.title.into(),
            publisher: app.publisher.into(),
            install_date: None,
        });
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn laptop() -> Template {
        let text = include_str!("../../fixtures/templates/win11-laptop.toml");
        Template::builtin(Profile::Win10).overlay(&Template::parse(text, "win11-laptop.toml").unwrap())
    }

    #[test]
    fn identities_are_a_function_of_seed_and_index() {
        let t = laptop();
        let a = identity(7, 42, &t);
        assert_eq!(a, identity(7, 42, &t));
        let b = identity(8, 42, &t);
        let c = identity(7, 43, &t);
        for other in [&b, &c] {
            assert_ne!(a.device_id, other.device_id);
            assert_ne!(a.serial, other.serial);
            assert_ne!(a.hostname, other.hostname);
            assert_ne!(a.mac, other.mac);
        }
    }

    #[test]
    fn values_have_the_shapes_windows_gives_them() {
        let t = laptop();
        for i in 0..500 {
            let id = identity(1, i, &t);
            assert!(id.laptop, "the laptop template gives laptops");
            assert_eq!(id.device_id.as_str().len(), 32);
            assert!(id.hostname.starts_with("LAPTOP-") && id.hostname.len() == 15, "{}", id.hostname);
            assert!(id.hostname[7..].bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
            let hw = id.hardware.expect("drawn hardware");
            assert!(LAPTOPS.contains(hw));
            match hw.serial {
                SerialStyle::Dell => assert_eq!(id.serial.len(), 7, "{}", id.serial),
                SerialStyle::Hp(p) => assert!(id.serial.starts_with(p) && id.serial.len() == 10, "{}", id.serial),
                SerialStyle::Lenovo(p) => assert!(id.serial.starts_with(p) && id.serial.len() == 8),
                SerialStyle::Surface => assert!(id.serial.len() == 12 && id.serial.bytes().all(|b| b.is_ascii_digit())),
                other => panic!("{other:?} is no laptop's"),
            }
            assert!(OUIS.iter().any(|(o, _)| id.mac[..3] == o[..]), "{:?}", id.mac);
            assert_eq!(id.mac_hex().len(), 12);
            let (name, domain) = id.upn.split_once('@').unwrap();
            assert_eq!(domain, "contoso.com");
            let (first, last) = id.display_name.split_once(' ').unwrap();
            assert_eq!(name, format!("{}.{}", first.to_lowercase(), last.to_lowercase()));
            // The template is Windows 11 24H2: its build with a known revision.
            let swv = id.os_build.as_deref().unwrap();
            let rev: u32 = swv.strip_prefix("10.0.26100.").unwrap().parse().unwrap();
            assert!(BUILDS[2].1.contains(&rev), "{swv}");
        }
    }

    #[test]
    fn upns_are_unique_within_a_block_and_suffixed_beyond() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..4096 {
            assert!(seen.insert(user(3, i, "contoso.com").1), "device {i} repeats a user");
        }
        let (_, upn) = user(3, 4096, "fabrikam.com");
        assert!(upn.ends_with("2@fabrikam.com"), "{upn}");
    }

    #[test]
    fn weights_shape_the_draws() {
        let t = Template::builtin(Profile::Win10);
        let pop = Population {
            timezones: vec![(chrono_tz::Asia::Tokyo, 75), (chrono_tz::Europe::Berlin, 25)],
            ..Population::default()
        };
        let form = Form { laptop: false, keep_hardware: false };
        let ids: Vec<Identity> = (0..4000).map(|i| Identity::derive(9, i, &t, form, &pop)).collect();
        let tokyo = ids.iter().filter(|i| i.timezone == chrono_tz::Asia::Tokyo).count();
        assert!((2850..3150).contains(&tokyo), "{tokyo} of 4000 in Tokyo, weight 75%");
        let optiplex = ids.iter().filter(|i| i.hardware.is_some_and(|h| h.model == "OptiPlex 7010")).count();
        // 24 of the desktops' 90: 1,067 expected, σ 28.
        assert!((980..1160).contains(&optiplex), "{optiplex} OptiPlex 7010 of 4000, weight 24 of 90");
        let first_app = ids.iter().filter(|i| i.apps & 1 != 0).count();
        assert!((2250..2550).contains(&first_app), "{first_app} with {}", APPS[0].title);
        // Most devices run one of the last three updates; some lag behind.
        let latest = ids.iter().filter(|i| i.os_build.as_deref() == Some("10.0.22631.6060")).count();
        assert!((1450..1750).contains(&latest), "{latest} on the latest 23H2 update");
        assert!(ids.iter().any(|i| i.os_build.as_deref() == Some("10.0.22631.5335")));
    }

    #[test]
    fn the_template_decides_what_it_has_no_table_for() {
        let text = include_str!("../../fixtures/templates/win81-tablet.toml");
        let t = Template::builtin(Profile::Win81).overlay(&Template::parse(text, "win81-tablet.toml").unwrap());
        let form = Form::of(&t);
        assert!(form.laptop, "a tablet sleeps at night");
        let id = Identity::derive(1, 0, &t, Form { keep_hardware: true, ..form }, &Population::default());
        assert_eq!((id.hardware, id.os_build.as_deref()), (None, None));
        // Surface serials for a Microsoft template.
        assert!(id.serial.len() == 12 && id.serial.starts_with('0'), "{}", id.serial);
        let dt = device_template(&id, &t);
        assert_eq!(dt.devinfo["Mod"], "Surface Pro 3");
        assert_eq!(dt.devdetail["SwV"], "6.3.9600.17031");
        assert_eq!(dt.devdetail["Ext/Microsoft/DeviceName"], id.hostname);
    }

    #[test]
    fn the_device_template_carries_the_identity_and_expands_the_rest() {
        let mut t = laptop();
        t.devdetail.insert("Ext/Microsoft/DeviceName".into(), "PC-{alnum:6}".into());
        t.devdetail.insert("HwV".into(), "rev {digits:3}".into());
        t.devdetail.insert("Ext/Microsoft/Resolution".into(), "{int:1..2}920x1080".into());
        let id = identity(5, 11, &t);
        let dt = device_template(&id, &t);
        assert_eq!(dt.devdetail["Ext/Microsoft/DeviceName"], id.hostname, "the identity wins");
        assert_eq!(dt.devdetail["HwV"], id.hardware.unwrap().firmware, "the identity wins");
        let res = &dt.devdetail["Ext/Microsoft/Resolution"];
        assert!(res == "1920x1080" || res == "2920x1080", "other patterns expand: {res}");
        assert_eq!(dt.devdetail["Ext/WLANMACAddress"], id.mac_hex());
        assert_eq!(dt.behaviour.str("timezone"), Some(id.timezone.name()));
        let choices = dt.nodes.values().map(Vec::len).max();
        assert_eq!(choices, Some(1), "[nodes] choices are picked");
        assert_eq!(dt.apps.len(), t.apps.len() + id.fleet_apps().count());
    }

    #[test]
    fn standard_offsets_ignore_daylight_saving() {
        let mut id = identity(1, 1, &laptop());
        id.timezone = chrono_tz::America::New_York;
        assert_eq!(id.standard_offset_minutes(), -300);
        id.timezone = chrono_tz::Asia::Kolkata;
        assert_eq!(id.standard_offset_minutes(), 330);
    }

    #[test]
    fn derive_is_cheap() {
        let t = laptop();
        let form = Form::of(&t);
        let pop = Population::default();
        let n = 20_000u64;
        let start = std::time::Instant::now();
        let mut sum = 0usize;
        for i in 0..n {
            sum += Identity::derive(1, i, &t, form, &pop).serial.len();
        }
        let per = start.elapsed() / n as u32;
        assert!(sum > 0);
        eprintln!("Identity::derive: {per:?} per identity, {} bytes", std::mem::size_of::<Identity>());
        // Far under the budget of 10 µs even in a debug build on a busy machine.
        assert!(per < std::time::Duration::from_micros(50), "{per:?}");
        let id = Identity::derive(1, 7, &t, form, &pop);
        let start = std::time::Instant::now();
        for _ in 0..1000 {
            sum += device_template(&id, &t).apps.len();
        }
        eprintln!("device_template: {:?} per device", start.elapsed() / 1000);
        assert!(sum > 1000, "every device template has apps");
    }
}
