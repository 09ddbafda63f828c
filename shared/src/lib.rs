//! # keqing-shared: the domain of Keqing, with no IO
//!
//! Everything here is pure: it takes values and returns values, and never
//! touches a file, a socket or the clock. The office client and the server
//! both build on it, so an office's daily report and headquarters' national
//! figures come from the same definitions.
//!
//! Map of the modules:
//! - [`office`]: the 27 province-level consultation offices (GB/T 2260 codes).
//! - [`staff`]: the roles (岗位) of a customer department and their staff.
//! - [`phone`]: phone number validation and normalisation (the dossier key).
//! - [`when`]: parsing the dates and times office staff type.
//! - [`records`]: the records a dossier holds (calls, visits, purchases, ...).
//! - [`limits`]: every field's maximum and the largest change and dossier.
//! - [`dossier`]: one patient dossier (病历档案) as an automerge document.
//! - [`followup`]: the follow-up cadence (回访节奏) derived from a dossier,
//!   with the plan changes staff made.
//! - [`lists`]: every dossier's category (客户档案的分类整理).
//! - [`report`]: report definitions shared by every level (office, HQ).
//! - [`roster`]: the staff of an office as one automerge document (and
//!   the office's own activities).
//! - [`activity`]: activities and promotions (活动) and their attribution.
//! - [`score`]: the staff evaluation score (客情岗位评定) and its weights.
//! - [`lifecycle`]: transfers and erasures as devices learn of them, and
//!   what an erasure leaves to the reports.
//! - [`nonpatient`]: an office's non-patient calls of a month, one document.
//! - [`bundle`]: signed change bundles for an office offline for weeks.
//! - [`sync`]: the sync protocol in domain terms (no wire format).
//! - [`sheets`]: a report as Chinese tables: text, CSV and .xlsx bytes.
//! - [`html`]: report tables, SVG charts and the host check of the web UIs.
//! - [`table`]: plain-text tables that line up Chinese text.
//! - [`printable`]: stored text made safe for a terminal or a log line.
//! - [`error`]: the domain error type.

pub mod activity;
pub mod bundle;
pub mod catalog;
pub mod dossier;
pub mod error;
pub mod followup;
pub mod html;
pub mod lifecycle;
pub mod limits;
pub mod lists;
pub mod nonpatient;
pub mod office;
pub mod packed;
pub mod phone;
pub mod printable;
pub mod records;
pub mod report;
pub mod roster;
pub mod score;
pub mod sheets;
pub mod staff;
pub mod sync;
pub mod table;
pub mod when;

pub use error::DomainError;
