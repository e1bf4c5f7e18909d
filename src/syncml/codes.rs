//! Status and alert codes as typed values with their meanings (OMA DM RepPro §10 status codes).
//!
//! Codes that are not listed keep their number in an `Other` variant: a server may send any
//! code, and we echo what we cannot name rather than refuse it.

use std::fmt;

macro_rules! code_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $num:literal => $meaning:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// A code this table does not name.
            Other(u16),
        }

        impl $name {
            /// The numeric code as sent on the wire.
            pub fn code(self) -> u16 {
                match self {
                    $(Self::$variant => $num,)*
                    Self::Other(n) => n,
                }
            }

            /// The numeric code as the decimal text a `Data` element carries. Runs for every
            /// Status a device sends: the text of a named code is a constant, not formatted.
            pub fn text(self) -> String {
                match self {
                    $(Self::$variant => stringify!($num).to_string(),)*
                    Self::Other(n) => itoa::Buffer::new().format(n).to_string(),
                }
            }

            /// The typed code for a number; unknown numbers become `Other`.
            pub fn from_code(n: u16) -> Self {
                match n {
                    $($num => Self::$variant,)*
                    other => Self::Other(other),
                }
            }

            /// What the code means, in the words of MS-MDM and MS-MDE2.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Self::$variant => $meaning,)*
                    Self::Other(_) => "unknown code",
                }
            }

            /// Parses the decimal text of a `Data` element (surrounding whitespace allowed).
            pub fn parse(text: &str) -> Option<Self> {
                text.trim().parse::<u16>().ok().map(Self::from_code)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} ({})", self.code(), self.meaning())
            }
        }
    };
}

code_enum! {
    /// A SyncML status code (the `Data` of a `Status`).
    StatusCode {
        Ok = 200 => "OK",
        Accepted = 202 => "accepted for asynchronous processing",
        AuthenticationAccepted = 212 => "authentication accepted for the rest of the session",
        ChunkedItemAccepted = 213 => "chunked item accepted and buffered",
        OperationCancelled = 214 => "operation cancelled",
        NotExecuted = 215 => "not executed (user cancelled)",
        AtomicRollbackOk = 216 => "rolled back inside a failed Atomic",
        BadRequest = 400 => "bad request",
        InvalidCredentials = 401 => "invalid credentials",
        Forbidden = 403 => "forbidden",
        NotFound = 404 => "node not found",
        CommandNotAllowed = 405 => "command not allowed",
        OptionalFeatureNotSupported = 406 => "optional feature not supported",
        MissingCredentials = 407 => "authentication required",
        IncompleteCommand = 412 => "incomplete command",
        RequestEntityTooLarge = 413 => "request entity too large",
        UnsupportedMediaType = 415 => "unsupported type or format",
        RequestedSizeTooBig = 416 => "requested size too big",
        AlreadyExists = 418 => "already exists",
        DeviceFull = 420 => "device full",
        SizeMismatch = 424 => "size mismatch",
        PermissionDenied = 425 => "permission denied",
        CommandFailed = 500 => "command failed",
        AtomicFailed = 507 => "Atomic failed",
        RefreshRequired = 508 => "refresh required",
        AtomicRollbackFailed = 516 => "Atomic rollback failed",
    }
}

impl StatusCode {
    /// True for the 2xx family.
    pub fn is_success(self) -> bool {
        (200..300).contains(&self.code())
    }
}

code_enum! {
    /// A SyncML alert code (the `Data` of an `Alert`).
    AlertCode {
        ServerInitiatedMgmt = 1200 => "server-initiated management session",
        ClientInitiatedMgmt = 1201 => "client-initiated management session",
        NextMessage = 1222 => "next message",
        SessionAbort = 1223 => "session abort",
        ClientEvent = 1224 => "client event",
        NoEndOfData = 1225 => "no end of data",
        GenericAlert = 1226 => "generic alert",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_kept() {
        for n in [200u16, 216, 404, 418, 507, 299, 999] {
            assert_eq!(StatusCode::from_code(n).code(), n);
        }
        assert_eq!(StatusCode::from_code(418), StatusCode::AlreadyExists);
        assert_eq!(StatusCode::parse(" 404\n"), Some(StatusCode::NotFound));
        assert_eq!(StatusCode::parse("x"), None);
        assert_eq!(AlertCode::from_code(1222), AlertCode::NextMessage);
        assert_eq!(AlertCode::from_code(1100), AlertCode::Other(1100));
        assert_eq!(StatusCode::AtomicFailed.to_string(), "507 (Atomic failed)");
    }
}
