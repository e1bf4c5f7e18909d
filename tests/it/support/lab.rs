//! `./Vendor/MSFT/Lab`: a test CSP with every kind of node the session tests need — dynamic
//! interior nodes the server adds and deletes, typed leaves, a Replace-only setting, an Exec
//! that counts and an Exec that fails.

use mdmsim::syncml::{Item, Meta, StatusCode};
use mdmsim::tree::{Csp, CspCx, Effect, Format, NodeRef, NodeSpec, Ops, Registry};

static LAB: NodeSpec = NodeSpec::interior(
    "Lab",
    Ops::GET,
    &[
        NodeSpec::interior(
            "Items",
            Ops::GET,
            &[NodeSpec::interior(
                "<Id>",
                Ops::ALL_WRITE,
                &[
                    NodeSpec::leaf("Name", Format::Chr, Ops::ALL_WRITE),
                    NodeSpec::leaf("Count", Format::Int, Ops::ALL_WRITE),
                ],
            )
            .dynamic()],
        ),
        NodeSpec::leaf("Mode", Format::Chr, Ops::GET.with(Ops::REPLACE)).default("normal"),
        NodeSpec::leaf("Reboots", Format::Int, Ops::GET).default("0"),
        NodeSpec::leaf("Reboot", Format::Null, Ops::EXEC),
        NodeSpec::leaf("Explode", Format::Null, Ops::EXEC),
        NodeSpec::leaf("Report", Format::Null, Ops::EXEC),
    ],
);

/// The Lab CSP.
pub struct Lab;

impl Csp for Lab {
    fn name(&self) -> &'static str {
        "Lab"
    }

    fn root(&self) -> &'static str {
        "Vendor/MSFT/Lab"
    }

    fn schema(&self) -> &'static NodeSpec {
        &LAB
    }

    fn exec(&self, cx: &mut CspCx<'_>, node: NodeRef<'_>, _data: Option<&str>) -> StatusCode {
        match node.rel {
            "Reboot" => {
                let n: u64 = cx.value("Reboots").and_then(|v| v.parse().ok()).unwrap_or(0);
                cx.set("Reboots", (n + 1).to_string());
                StatusCode::Ok
            }
            "Report" => {
                // A client alert for the next message and a request for another session.
                let mut item = Item::source_data("./Vendor/MSFT/Lab/Report", "0");
                item.meta = Some(Box::new(Meta::typed("com.example.lab.report", Some("int"))));
                cx.emit(Effect::Alert { code: 1226, item });
                cx.emit(Effect::RequestSession { reason: "lab report".into() });
                StatusCode::Ok
            }
            _ => StatusCode::CommandFailed,
        }
    }
}

/// The product's registry plus the Lab CSP.
pub fn registry() -> Registry {
    let mut r = mdmsim::csp::registry();
    r.register(Lab);
    r
}
