//! Closed sets of values with one name each, as the command line and files spell them
//! (`win10`, `reboot`, `virtual`). The core types say their names here; the binary turns them
//! into command-line choices, so that the core does not depend on the argument parser.

/// A closed set of values with one name each.
pub trait Named: Sized + Copy + 'static {
    /// Every value, in the order help lists them.
    const ALL: &'static [Self];

    /// The value's name.
    fn name(self) -> &'static str;

    /// The value of a name (ASCII case ignored).
    fn from_name(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name().eq_ignore_ascii_case(s.trim()))
    }

    /// The names joined with ` | `, for error messages.
    fn choices() -> String {
        Self::ALL.iter().map(|v| v.name()).collect::<Vec<_>>().join(" | ")
    }
}
