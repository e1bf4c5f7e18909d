//! An enrolled device, end to end: [`enroll_device`] runs the MS-MDE2 enrollment
//! ([`super::enroll::enroll`]) and turns the result into a [`Device`] record whose tree holds
//! the provisioned values (applied through the tree engine, so the DMClient and DMAcc rules
//! hold, all or nothing) plus the [`EnrollmentMaterial`] (client key and certificate, trusted
//! roots) its management sessions need; [`store_enrolled`] keeps both in a state directory
//! (key 0600); [`http_options`] gives a device's transport its mTLS identity and roots;
//! [`session_auth`] / [`keep_next_nonce`] plug the application-layer credentials
//! ([`AppAuth`], OMA DM Security, MD5 digest authentication) into a session and carry the server's next nonce over to
//! the next one; [`handle_effects`] / [`wipe_enrollment`] carry out an unenrollment
//! (server-initiated `DMClient/Provider/<ID>/Unenroll`, or user-initiated after `mdmsim
//! unenroll`'s Alert 1226 session) and [`check_usable`] refuses an unenrolled device.
//!
//! Used by `mdmsim enroll` / `sync` / `unenroll` and by in-process fleets (no files needed: the
//! material can stay in memory). Does not own the protocol messages (`crate::enroll`) or the
//! session loop (`super::run_session`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};

use super::enroll::{self as wire, EnrollError, EnrollRequest, Enrolled, write_private_key};
use super::http::HttpOptions;
use super::keys::KeyPool;
use super::store::{Store, StoreError};
pub use crate::device::auth::{keep_next_nonce, session_auth};
use crate::device::{Device, DeviceId, Enrollment, Template, UnenrolledBy};
use crate::enroll::{ApplyError, AuthToken, DeviceIdentity, EnrollmentType, Secret};
use crate::tree::{Effect, Profile, Settings, Tree};

/// The file names inside a device's enrollment folder (what [`Enrolled::write_to_dir`] writes).
const KEY_FILE: &str = "device.key";
const CERT_FILE: &str = "device.crt";
const ROOTS_FILE: &str = "roots.pem";
/// The CA the user trusted for the server's TLS at enrollment (`--ca-cert`), kept like an
/// installed trust anchor of a real machine.
const SERVER_CA_FILE: &str = "server-ca.pem";

/// What to enroll: the user, how they authenticate, and the device that enrolls.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// The enrolling user's address (Discover EmailAddress, RST user).
    pub email: String,
    /// `--password` (OnPremise) or `--token` (Federated / JWT / Fleet's user token).
    pub auth: AuthToken,
    pub enrollment_type: EnrollmentType,
    pub profile: Profile,
    /// DevInfo/DevDetail values and behaviour settings of the device.
    pub template: Template,
    pub id: DeviceId,
    /// The template's settings, when the caller shares one copy among many devices
    /// ([`Device::with_settings`]); `None` makes them from `template`.
    pub settings: Option<Arc<Settings>>,
    /// Where the key comes from: a pool and the device's place in it; `None` generates one.
    pub key_pool: Option<(Arc<KeyPool>, u64)>,
}

impl EnrollOptions {
    /// A Full enrollment of a `profile` device with the built-in template.
    pub fn new(email: &str, auth: AuthToken, id: DeviceId, profile: Profile) -> EnrollOptions {
        EnrollOptions {
            email: email.to_string(),
            auth,
            enrollment_type: EnrollmentType::Full,
            profile,
            template: Template::builtin(profile),
            id,
            settings: None,
            key_pool: None,
        }
    }
}

/// The key and certificates of an enrollment. `Debug` never shows the key.
#[derive(Debug, Clone)]
pub struct EnrollmentMaterial {
    key_pem: Secret,
    /// The client certificate, then the intermediates (PEM).
    pub cert_chain_pem: String,
    /// The provisioned roots (PEM bundle), trusted for this device's TLS.
    pub roots_pem: String,
    /// The trust anchors given for the server's TLS at enrollment (`--ca-cert`, PEM bundle;
    /// empty when none): trusted for every later session, as a real machine keeps a CA once
    /// installed.
    pub server_ca_pem: String,
}

/// Enrollment material that cannot be read or used.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// A file of the enrollment folder cannot be read.
    #[error("enrollment file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// The key and certificate do not make a TLS identity.
    #[error("enrollment of device {device}: the client certificate and key are unusable: {reason}")]
    Identity { device: String, reason: String },
}

impl EnrollmentMaterial {
    /// The material of a finished enrollment.
    pub fn from_enrolled(e: &Enrolled) -> EnrollmentMaterial {
        let mut chain = e.client_cert_pem.clone();
        chain.extend(e.intermediate_certs_pem.iter().map(String::as_str));
        EnrollmentMaterial {
            key_pem: e.key_pem.clone(),
            cert_chain_pem: chain,
            roots_pem: e.root_certs_pem.concat(),
            server_ca_pem: String::new(),
        }
    }

    /// The same material, also trusting `ca_pem` (the `--ca-cert` of the enrollment) for the
    /// server's TLS in every later session.
    pub fn trusting(mut self, ca_pem: Option<&[u8]>) -> EnrollmentMaterial {
        if let Some(pem) = ca_pem {
            self.server_ca_pem = String::from_utf8_lossy(pem).into_owned();
        }
        self
    }

    /// Writes `device.key` (0600), `device.crt`, `roots.pem` and, when there is one,
    /// `server-ca.pem` into `dir` (created, 0700).
    pub fn write_to_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        write_private_key(&dir.join(KEY_FILE), &self.key_pem)?;
        std::fs::write(dir.join(CERT_FILE), &self.cert_chain_pem)?;
        if !self.server_ca_pem.trim().is_empty() {
            std::fs::write(dir.join(SERVER_CA_FILE), &self.server_ca_pem)?;
        }
        std::fs::write(dir.join(ROOTS_FILE), &self.roots_pem)
    }

    /// Reads what [`EnrollmentMaterial::write_to_dir`] wrote.
    pub fn read_from_dir(dir: &Path) -> Result<EnrollmentMaterial, MaterialError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| MaterialError::Read { path, reason: e.to_string() })
        };
        Ok(EnrollmentMaterial {
            key_pem: Secret::new(read(KEY_FILE)?),
            cert_chain_pem: read(CERT_FILE)?,
            roots_pem: read(ROOTS_FILE)?,
            // Devices enrolled before the file existed have none.
            server_ca_pem: if dir.join(SERVER_CA_FILE).exists() { read(SERVER_CA_FILE)? } else { String::new() },
        })
    }

    /// The certificate and key that sign client messages when DMClient RequireMessageSigning
    /// is true.
    pub fn signer(&self) -> super::signing::Signer {
        super::signing::Signer::new(self.cert_chain_pem.clone(), self.key_pem.clone())
    }

    /// The client identity for mTLS.
    pub fn identity(&self) -> Result<reqwest::Identity, reqwest::Error> {
        reqwest::Identity::from_pkcs8_pem(self.cert_chain_pem.as_bytes(), self.key_pem.expose().as_bytes())
    }
}

/// Why a device could not be enrolled. Nothing was stored in either case.
#[derive(Debug, thiserror::Error)]
pub enum DeviceEnrollError {
    /// The enrollment protocol failed (unreachable, SOAP fault, malformed answer...).
    #[error("enrollment failed: {0}")]
    Enroll(#[from] EnrollError),
    /// The device's tree refused a value of the provisioning document.
    #[error("enrollment failed: the device refused the provisioning document: {0}")]
    Apply(#[from] ApplyError),
}

impl DeviceEnrollError {
    /// The CLI exit code: [`EnrollError::exit_code`]; a refused provisioning document is the
    /// server's fault (4).
    pub fn exit_code(&self) -> u8 {
        match self {
            DeviceEnrollError::Enroll(e) => e.exit_code(),
            DeviceEnrollError::Apply(_) => 4,
        }
    }
}

/// What the device says about itself during enrollment, from its template: device name, OS
/// version and edition, locale; the HWDevID is derived from the DeviceID (stable per device).
pub fn device_identity(id: &DeviceId, template: &Template) -> DeviceIdentity {
    let template = &template.for_device(id);
    let hw = hex::encode_upper(Sha256::digest(format!("mdmsim-hwdevid:{id}").as_bytes()));
    let mut d = DeviceIdentity::new(id.as_str(), &hw);
    if let Some(v) = template.devdetail.get("Ext/Microsoft/DeviceName") {
        d.device_name = v.clone();
    }
    if let Some(v) = template.devdetail.get("SwV") {
        d.os_version = v.clone();
        d.application_version = v.clone();
    }
    if let Some(v) = template.devdetail.get("Ext/Microsoft/OSEdition") {
        d.os_edition = v.clone();
    }
    if let Some(v) = template.devinfo.get("Lang") {
        d.locale = v.clone();
    }
    d
}

/// Enrolls one device through `discovery_url` and builds its record: the management URL (w7
/// ADDR) as server, PROVIDER-ID as DMClient provider, the provisioned DMAcc and DMClient values
/// applied to its tree through the tree engine (all or nothing), `enrolled_at = now`. Stores
/// nothing: persist with [`store_enrolled`] (or keep the material in memory). Conformance
/// findings of the enrollment are kept in the record's `enrollment.findings` and logged as
/// warnings.
pub async fn enroll_device(
    client: &reqwest::Client,
    discovery_url: &str,
    opts: &EnrollOptions,
    now: DateTime<Utc>,
) -> Result<(Device, EnrollmentMaterial), DeviceEnrollError> {
    let (device, enrolled) = enroll_held(client, discovery_url, opts, now).await?;
    Ok((device, EnrollmentMaterial::from_enrolled(&enrolled)))
}

/// [`enroll_device`] for a device held in memory only: the device and the enrollment itself,
/// whose key object ([`Enrolled::key`], shared when it comes from a pool) and certificates make
/// the device's TLS identity ([`super::mtls::TlsIdentity`]).
pub async fn enroll_held(
    client: &reqwest::Client,
    discovery_url: &str,
    opts: &EnrollOptions,
    now: DateTime<Utc>,
) -> Result<(Device, Enrolled), DeviceEnrollError> {
    let identity = device_identity(&opts.id, &opts.template);
    let mut request = EnrollRequest::new(&opts.email, opts.auth.clone(), identity);
    request.enrollment_type = opts.enrollment_type;
    request.key_pool = opts.key_pool.clone();
    let enrolled = wire::enroll(client, discovery_url, request).await?;
    for finding in &enrolled.findings {
        tracing::info!(device = %opts.id, "enrollment: {finding}");
    }
    let device = device_of(&enrolled, discovery_url, opts, now)?;
    Ok((device, enrolled))
}

/// The device record of a finished enrollment (the sans-I/O half of [`enroll_device`]).
pub fn device_of(
    enrolled: &Enrolled,
    discovery_url: &str,
    opts: &EnrollOptions,
    now: DateTime<Utc>,
) -> Result<Device, ApplyError> {
    let app = &enrolled.provisioning.app;
    let settings = opts.settings.clone().unwrap_or_else(|| crate::device::template_settings(&opts.template));
    let mut device = Device::with_settings(
        opts.id.clone(),
        opts.profile,
        &app.addr,
        &app.provider_id,
        &opts.template,
        settings,
        now,
    );
    let registry = crate::csp::registry();
    let env = device.env(now);
    let mut tree = Tree::new(&registry, &mut device.tree, &env);
    enrolled.provisioning.apply(&mut tree)?;
    device.tree.commit();
    let record = enrolled.record(opts.enrollment_type);
    device.enrollment = Some(Enrollment {
        enrollment_type: opts.enrollment_type,
        discovery_url: discovery_url.to_string(),
        user: opts.email.clone(),
        account_uid: record.account_uid,
        client_cert_thumbprint: record.client_cert_thumbprint,
        files: None,
        findings: enrolled.findings.clone(),
    });
    Ok(device)
}

/// The enrollment folder of a device, relative to the state directory.
pub fn files_dir(id: &DeviceId) -> PathBuf {
    Path::new("enrollments").join(id.as_str())
}

/// Why an enrolled device could not be stored (nothing was left behind).
#[derive(Debug, thiserror::Error)]
pub enum StoreEnrollError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the enrollment files into {dir}: {reason}")]
    Files { dir: PathBuf, reason: String },
    /// The id belongs to a device that is enrolled already.
    #[error("device {0} is enrolled already (unenroll it first with `mdmsim unenroll`)")]
    Enrolled(String),
}

/// Refuses an id that a stored, still enrolled (or pre-provisioned) device has; an unenrolled
/// device may enroll again under its id.
pub fn check_id_free(store: &Store, id: &DeviceId) -> Result<(), StoreEnrollError> {
    match store.load(Some(id.as_str())) {
        Ok(d) if d.unenrolled.is_some() => Ok(()),
        Ok(_) => Err(StoreEnrollError::Enrolled(id.to_string())),
        Err(StoreError::UnknownDevice { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Stores an enrolled device: writes its material into `state_dir/enrollments/<ID>/` (key
/// 0600), references the folder from the record and saves the record (replacing an unenrolled
/// device of the same id). On failure the folder is removed again.
pub fn store_enrolled(
    store: &Store,
    state_dir: &Path,
    device: &mut Device,
    material: &EnrollmentMaterial,
) -> Result<(), StoreEnrollError> {
    check_id_free(store, &device.id)?;
    let rel = files_dir(&device.id);
    let dir = state_dir.join(&rel);
    let undo = |e: StoreEnrollError| {
        let _ = std::fs::remove_dir_all(&dir);
        e
    };
    material
        .write_to_dir(&dir)
        .map_err(|e| undo(StoreEnrollError::Files { dir: dir.clone(), reason: e.to_string() }))?;
    if let Some(e) = device.enrollment.as_mut() {
        e.files = Some(rel);
    }
    let replacing = store.load(Some(device.id.as_str())).is_ok();
    let saved = if replacing { store.save(device) } else { store.create(device) };
    saved.map_err(|e| undo(e.into()))
}

/// The enrollment material of a stored device, `None` when it is not enrolled through files.
pub fn stored_material(device: &Device, state_dir: &Path) -> Result<Option<EnrollmentMaterial>, MaterialError> {
    match device.enrollment.as_ref().and_then(|e| e.files.as_ref()) {
        Some(rel) => EnrollmentMaterial::read_from_dir(&state_dir.join(rel)).map(Some),
        None => Ok(None),
    }
}

/// Transport options for an enrolled device: its client certificate for mTLS, and its
/// provisioned roots and the CA trusted at enrollment trusted besides `opts.ca_cert_pem`
/// (`--ca-cert`).
pub fn http_options(
    device: &Device,
    material: &EnrollmentMaterial,
    mut opts: HttpOptions,
) -> Result<HttpOptions, MaterialError> {
    let identity = material
        .identity()
        .map_err(|e| MaterialError::Identity { device: device.id.to_string(), reason: e.to_string() })?;
    opts.identity = Some(identity);
    opts.signer = Some(material.signer());
    for extra in [&material.roots_pem, &material.server_ca_pem] {
        if extra.trim().is_empty() {
            continue;
        }
        let mut pem = opts.ca_cert_pem.take().unwrap_or_default();
        if !pem.is_empty() && !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
        pem.extend_from_slice(extra.as_bytes());
        opts.ca_cert_pem = Some(pem);
    }
    Ok(opts)
}

/// A device that must not run sessions any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "device {device} was unenrolled by the {} on {} (provider {provider}): its enrollment was wiped; enroll it again with `mdmsim enroll`",
    match by { UnenrolledBy::Server => "server", UnenrolledBy::User => "user", UnenrolledBy::LostContact => "device after losing contact" },
    at.format("%Y-%m-%d %H:%M:%S UTC")
)]
pub struct NotEnrolled {
    pub device: String,
    pub by: UnenrolledBy,
    pub at: DateTime<Utc>,
    pub provider: String,
}

/// Refuses an unenrolled device (the CLI's exit 5).
pub fn check_usable(device: &Device) -> Result<(), NotEnrolled> {
    match &device.unenrolled {
        Some(u) => {
            Err(NotEnrolled { device: device.id.to_string(), by: u.by, at: u.at, provider: u.provider_id.clone() })
        }
        None => Ok(()),
    }
}

/// Wipes a device's enrollment ([`Device::wipe_enrollment`]: the tree and the record) and
/// deletes its key and certificate files (when `state_dir` is given and the device has them).
/// The caller saves the record.
pub fn wipe_enrollment(
    device: &mut Device,
    state_dir: Option<&Path>,
    by: UnenrolledBy,
    now: DateTime<Utc>,
) -> std::io::Result<()> {
    let files = device.wipe_enrollment(by, now);
    delete_enrollment_files(state_dir, files.as_deref())
}

/// Deletes the enrollment folder `files` (relative to `state_dir`) that
/// [`Device::wipe_enrollment`] handed back; a folder already gone is fine.
pub fn delete_enrollment_files(state_dir: Option<&Path>, files: Option<&Path>) -> std::io::Result<()> {
    match (state_dir, files) {
        (Some(state), Some(rel)) => match std::fs::remove_dir_all(state.join(rel)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Carries out the effects of a session that concern the enrollment: an `Unenroll` (the
/// server's `DMClient/Provider/<ID>/Unenroll` Exec) wipes it. Returns true when it did.
pub fn handle_effects(
    device: &mut Device,
    state_dir: Option<&Path>,
    effects: &[Effect],
    now: DateTime<Utc>,
) -> std::io::Result<bool> {
    let Some(reason) = effects.iter().find_map(|e| match e {
        Effect::Unenroll { reason } => Some(reason),
        _ => None,
    }) else {
        return Ok(false);
    };
    if device.unenrolled.is_some() {
        return Ok(false);
    }
    tracing::info!(device = %device.id, reason, "server-initiated unenrollment");
    wipe_enrollment(device, state_dir, UnenrolledBy::Server, now)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use chrono::TimeZone;

    use super::*;
    use crate::enroll::digest_md5;
    use crate::syncml::{Chal, Meta};

    fn device_with_account() -> Device {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap();
        let mut d = Device::new(
            DeviceId::from_seed(3),
            Profile::Win10,
            "https://127.0.0.1:1/x",
            "P",
            &Template::builtin(Profile::Win10),
            now,
        );
        let base = format!("SyncML/DMAcc/{}/AppAuth/CLCRED", crate::enroll::account_uid("P"));
        d.tree.set_value(&format!("{base}/AAuthLevel"), "CLCRED");
        d.tree.set_value(&format!("{base}/AAuthType"), "DIGEST");
        d.tree.set_value(&format!("{base}/AAuthName"), "name");
        d.tree.set_value(&format!("{base}/AAuthSecret"), "secret");
        d.tree.set_value(&format!("{base}/AAuthData"), B64.encode(b"first"));
        d.tree.commit();
        d
    }

    fn chal(nonce: &[u8]) -> Chal {
        Chal { meta: Meta { next_nonce: Some(B64.encode(nonce)), ..Meta::typed("syncml:auth-md5", Some("b64")) } }
    }

    #[test]
    fn credentials_answer_a_challenge_and_the_next_nonce_is_kept() {
        let mut d = device_with_account();
        let (cred, auth) = session_auth(&d.tree);
        assert_eq!(cred.unwrap().data, digest_md5("name", "secret", b"first"));
        assert_eq!(auth.unwrap().answer(&chal(b"again")).unwrap().data, digest_md5("name", "secret", b"again"));
        keep_next_nonce(&mut d.tree, Some(&chal(b"next")));
        assert_eq!(session_auth(&d.tree).0.unwrap().data, digest_md5("name", "secret", b"next"));
        assert!(!d.tree.is_dirty());
        let plain = Device::new(
            DeviceId::from_seed(4),
            Profile::Win10,
            "https://127.0.0.1:1/x",
            "P",
            &Template::builtin(Profile::Win10),
            d.enrolled_at,
        );
        assert!(session_auth(&plain.tree).1.is_none());
    }

    #[test]
    fn an_unenroll_effect_wipes_the_tree_and_files_and_marks_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = device_with_account();
        let rel = files_dir(&d.id);
        std::fs::create_dir_all(dir.path().join(&rel)).unwrap();
        std::fs::write(dir.path().join(&rel).join(KEY_FILE), "k").unwrap();
        d.enrollment = Some(Enrollment {
            enrollment_type: EnrollmentType::Full,
            discovery_url: "https://127.0.0.1:1/d".into(),
            user: "u@example.com".into(),
            account_uid: crate::enroll::account_uid("P"),
            client_cert_thumbprint: "AB".into(),
            files: Some(rel.clone()),
            findings: Vec::new(),
        });
        let now = d.enrolled_at;
        assert!(!handle_effects(&mut d, Some(dir.path()), &[], now).unwrap());
        let effects = [Effect::Unenroll { reason: "Exec".into() }];
        assert!(handle_effects(&mut d, Some(dir.path()), &effects, now).unwrap());
        assert!(!dir.path().join(&rel).exists());
        assert!(d.tree.child_names("SyncML/DMAcc").is_empty());
        assert!(d.tree.value("Vendor/MSFT/DMClient/Provider/P/ManagementServiceAddress").is_none());
        let err = check_usable(&d).unwrap_err();
        assert!(err.to_string().contains("unenrolled by the server"), "{err}");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Device>(&json).unwrap(), d);
    }
}
