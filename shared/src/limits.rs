//! Every bound on what people type and what a dossier may grow to, in one
//! place. The desk checks each typed field against [`max_chars`] before it
//! makes a change (the command line and the workstation refuse alike, the
//! field named in the error), and every change against
//! [`MAX_CHANGE_BYTES`] and [`MAX_DOSSIER_BYTES`] before it is committed, so
//! nothing over a limit ever enters an outbox. The server keeps the byte
//! limits itself ([`crate::sync::limits`]): it never trusts a client's.
//!
//! | field | at most |
//! | --- | --- |
//! | names: patient, staff, device, product, information source, disease, relation, kind of follow-up | 40 characters |
//! | invoice, gift receipt, hospital | 100 characters |
//! | address, gifts | 200 characters |
//! | free text: condition, treatment, outcome, reason, notes, next entry point, description, resolution | 2 000 characters |
//! | one change (one edit) | 1 MiB |
//! | one dossier (its saved document, every edit of its history included) | 4 MiB |
//!
//! A dossier's size counts its history: automerge keeps every value a field
//! ever had, so a note rewritten many times grows it. 4 MiB is a patient
//! with tens of thousands of records; a dossier that reaches it takes no
//! more edits (the error says so), and still reaches every device and
//! headquarters (a pull batch always carries at least one whole document).

use crate::DomainError;

/// Names: of a patient, a staff member, a device, a product, an
/// information source, a disease, a caller's relation, a kind of call.
pub const NAME_CHARS: usize = 40;
/// Short references: an invoice or gift-receipt number, a hospital.
pub const REFERENCE_CHARS: usize = 100;
/// An address, the gifts handed over.
pub const ADDRESS_CHARS: usize = 200;
/// Free text: notes, condition, treatment, outcomes, reasons, descriptions.
pub const TEXT_CHARS: usize = 2000;

/// The largest single change (one edit) a device makes or the server takes.
pub const MAX_CHANGE_BYTES: usize = crate::sync::limits::MAX_CHANGE_BYTES;
/// The largest a dossier's saved document (uncompressed) may grow.
pub const MAX_DOSSIER_BYTES: usize = crate::sync::limits::MAX_DOSSIER_BYTES;

/// The most characters field `field` may hold. Every field the desk takes
/// is listed; an unknown name gets the free-text limit.
pub fn max_chars(field: &str) -> usize {
    match field {
        "name" | "staff" | "device" | "product" | "source" | "disease" | "relation" | "kind" => {
            NAME_CHARS
        }
        "invoice" | "gift_receipt" | "hospital" => REFERENCE_CHARS,
        "address" | "gifts" => ADDRESS_CHARS,
        _ => TEXT_CHARS,
    }
}

/// A typed value of field `field`: trimmed, not empty, within the field's
/// limit, with no control characters but line breaks (see
/// [`crate::staff::validate_text`]).
pub fn field(field: &'static str, value: &str) -> Result<String, DomainError> {
    crate::staff::validate_text(field, value, max_chars(field))
}

/// An optional typed value: empty or blank is `None`, anything else is
/// checked as [`field`].
pub fn optional(
    field_name: &'static str,
    value: Option<&str>,
) -> Result<Option<String>, DomainError> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| field(field_name, v))
        .transpose()
}

/// Refuses a change of `change_bytes` that would make a dossier's saved
/// document `dossier_bytes` long.
pub fn check_edit(change_bytes: usize, dossier_bytes: usize) -> Result<(), DomainError> {
    if change_bytes > MAX_CHANGE_BYTES {
        return Err(DomainError::TooLarge {
            what: "change",
            bytes: change_bytes,
            max: MAX_CHANGE_BYTES,
        });
    }
    if dossier_bytes > MAX_DOSSIER_BYTES {
        return Err(DomainError::TooLarge {
            what: "dossier",
            bytes: dossier_bytes,
            max: MAX_DOSSIER_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_has_its_limit_and_the_error_names_it() {
        assert_eq!(max_chars("name"), 40);
        assert_eq!(max_chars("address"), 200);
        assert_eq!(max_chars("condition"), 2000);
        assert!(field("address", &"路".repeat(200)).is_ok());
        let e = field("address", &"路".repeat(201)).unwrap_err();
        assert!(
            matches!(
                e,
                DomainError::InvalidField {
                    field: "address",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("200"), "{e}");
        assert_eq!(optional("notes", Some("  ")).unwrap(), None);
        assert!(optional("notes", Some(&"x".repeat(2001))).is_err());
    }

    #[test]
    fn edits_over_the_byte_limits_are_refused() {
        assert!(check_edit(100, 4 << 20).is_ok());
        assert!(matches!(
            check_edit((1 << 20) + 1, 10),
            Err(DomainError::TooLarge { what: "change", .. })
        ));
        assert!(matches!(
            check_edit(100, (4 << 20) + 1),
            Err(DomainError::TooLarge {
                what: "dossier",
                ..
            })
        ));
    }
}
