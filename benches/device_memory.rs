//! Memory of idle devices and of the CSP schema: `cargo bench --bench device_memory [-- N]`.
//!
//! Prints the process RSS (Linux `/proc/self/statm`) at three points: before anything, after
//! the CSP registry is built (the node tables of every CSP, shared by all devices, built once),
//! and after `N` (default 10,000) devices are made from the built-in Windows 10 template, each
//! with one Get of a DDF-backed policy executed. The per-device figure shows that a device
//! stores only its values: it does not grow with the number of CSPs the registry knows.

use chrono::Utc;

use mdmsim::device::{Device, DeviceId, Template};
use mdmsim::syncml::{Command, Item, ItemCmd};
use mdmsim::tree::{Profile, Tree};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let start = rss_bytes();
    let registry = mdmsim::csp::registry();
    let csps = registry.csps().count();
    let with_schema = rss_bytes();
    let template = Template::builtin(Profile::Win10);
    let now = Utc::now();
    let get = Command::Get(ItemCmd {
        cmd_id: "1".into(),
        items: vec![Item::target("./Device/Vendor/MSFT/Policy/Result/Camera/AllowCamera")],
        ..ItemCmd::default()
    });
    let mut devices = Vec::with_capacity(n);
    for i in 0..n {
        let mut d =
            Device::new(DeviceId::from_seed(i as u64), Profile::Win10, "https://mdm.test/", "P", &template, now);
        let env = d.env(now);
        let out = Tree::new(&registry, &mut d.tree, &env).execute(&get);
        assert_eq!(out[0].code.code(), 200);
        devices.push(d);
    }
    let with_devices = rss_bytes();
    println!("CSPs in the registry:        {csps}");
    println!("RSS at start:                {:8.1} MiB", mib(start));
    println!(
        "RSS with the CSP schema:     {:8.1} MiB (+{:.1} MiB, once per process)",
        mib(with_schema),
        mib(with_schema - start)
    );
    println!(
        "RSS with {n} devices:      {:8.1} MiB (+{:.1} KiB per device)",
        mib(with_devices),
        (with_devices - with_schema) as f64 / 1024.0 / n as f64
    );
    drop(devices);
}
