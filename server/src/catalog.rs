//! The catalogue at headquarters: `keqing-server catalog import` writes a
//! new version into every office's copy (`catalog-44` …) in one append,
//! as the server's own change; the offices' devices pull their copy with
//! their normal sync. No device may push to a copy (`hub::decode_push`).

use crate::store::{DocumentState, LogReader, NewLogEntry, Store, StoreError};
use keqing_shared::catalog::{Catalog, CatalogError, catalog_id, read_saved, write_copy};
use keqing_shared::office::OFFICES;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CatalogImportError {
    #[error(transparent)]
    File(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("目录文档损坏 the stored catalogue does not load: {0}")]
    Damaged(String),
    #[error(
        "还没有目录 import a catalogue first (keqing-server catalog import FILE.toml): spend is kept by its sources' codes"
    )]
    NoCatalog,
}

/// What a spend import stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendImported {
    pub rows: u64,
    /// Keys (day, office, source) not there before; the rest replaced.
    pub new: u64,
    pub total_fen: i64,
}

/// Reads `text` as a media spend file against the catalogue in force and
/// stores it (one amount per day, office and source; audited as
/// `admin`'s). Nothing is stored when the file is refused. The one path of
/// the command line and the dashboard.
pub fn import_spend(
    store: &dyn Store,
    text: &str,
    admin: &str,
) -> Result<SpendImported, CatalogImportError> {
    let catalog = current(&*store.reader()?)?.ok_or(CatalogImportError::NoCatalog)?;
    let rows = keqing_shared::catalog::parse_spend_csv(text, &catalog)?;
    let new = store.import_spend(&rows, admin)?;
    Ok(SpendImported {
        rows: rows.len() as u64,
        new,
        total_fen: rows.iter().map(|r| r.amount_fen).sum(),
    })
}

/// What the change log names as the writer of the catalogue's changes.
pub const CATALOG_WRITER: &str = "keqing-server catalog";

/// The catalogue in force (every office's copy holds the same version; the
/// first office's is read), `None` before the first import.
pub fn current(reader: &dyn LogReader) -> Result<Option<Catalog>, CatalogImportError> {
    from_snapshot(&reader.snapshot_of(&in_force_id())?)
}

/// The id of the copy the server reads the catalogue in force from.
pub fn in_force_id() -> String {
    catalog_id(OFFICES[0].code)
}

/// The catalogue a stored copy holds (`None`: no copy yet).
pub fn from_snapshot(snapshot: &[u8]) -> Result<Option<Catalog>, CatalogImportError> {
    if snapshot.is_empty() {
        return Ok(None);
    }
    read_saved(snapshot)
        .map(Some)
        .map_err(|e| CatalogImportError::Damaged(e.to_string()))
}

/// Reads `text` as a new catalogue (the version after the current one)
/// and writes it into every office's copy in one durable append, audited
/// as `admin`'s. Nothing is written when the file is refused.
pub fn import(store: &dyn Store, text: &str, admin: &str) -> Result<Catalog, CatalogImportError> {
    let mut writer = store.log_writer()?;
    let version = current(&*writer)?.map_or(1, |c| c.version + 1);
    let catalog = Catalog::parse_toml(text, version)?;
    let time_ms = keqing_host::now_cst().and_utc().timestamp_millis();
    let mut entries = Vec::new();
    let mut docs = Vec::new();
    for office in OFFICES.iter() {
        let doc_id = catalog_id(office.code);
        let previous = writer.snapshot_of(&doc_id)?;
        let previous = (!previous.is_empty()).then_some(previous.as_slice());
        let (snapshot, change) = write_copy(&doc_id, previous, &catalog, time_ms)
            .map_err(|e| CatalogImportError::Damaged(e.to_string()))?;
        entries.push(NewLogEntry {
            hash: change.hash.0,
            doc_id: doc_id.clone(),
            office: office.code.to_string(),
            bytes: change.bytes,
        });
        docs.push(DocumentState {
            doc_id,
            office: office.code.to_string(),
            snapshot,
            complete: true,
            merged_into: None,
        });
    }
    writer.append(CATALOG_WRITER, &entries, &docs)?;
    writer.audit(
        admin,
        "catalog.import",
        &format!("version {version}"),
        &format!(
            "{} sources, {} products, {} diseases",
            catalog.sources.len(),
            catalog.products.len(),
            catalog.diseases.len()
        ),
    )?;
    writer.commit()?;
    Ok(catalog)
}
