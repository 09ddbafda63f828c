//! How saved documents are kept at rest: deflated (the server's stores keep
//! each dossier's snapshot so, and a device's replica each document). A
//! saved automerge document compresses its columns only above a few
//! hundred bytes, so a dossier's 2.5 KB holds much that repeats (keys,
//! actors, Chinese text): deflated it takes ~0.9 KB (the national
//! benchmark's dossiers). Much of what repeats is the same in every
//! dossier (the column layout, the field names, the words of the
//! handbook), so the stream starts from a preset dictionary, one saved
//! dossier: ~0.7 KB. A store packs what it is given and unpacks what it
//! reads, so above it a document is the automerge bytes as ever. Pure
//! computation on bytes in memory, like the rest of this crate.

use crate::sync::limits::MAX_MESSAGE_BYTES;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// First byte of a document packed before the dictionary: a raw deflate
/// stream follows. A saved automerge document begins with its magic bytes
/// (`85 6f 4a 83`), so a document stored as it was (by an older release,
/// or one deflate would not make smaller) is told apart and read as it is.
/// Still read; no longer written.
const DEFLATED: u8 = 0x01;

/// First byte of a packed document: a raw deflate stream follows, made
/// with [`DICTIONARY`] preset.
const DEFLATED_WITH_DICTIONARY: u8 = 0x02;

/// The preset dictionary of [`DEFLATED_WITH_DICTIONARY`]: the saved bytes
/// (2 073) of one dossier of the demo, the smallest over 2 000 bytes in
/// the server store of `keqing demo --offices 3 --days 60 --patients 40
/// --start 2026-09-01 --keep DIR` (seed 2026). Made from the demo's
/// generator, not the national benchmark's, so the benchmark measures it
/// on dossiers it was not drawn from: there a dossier's 2.5 KB are stored
/// in 696 bytes on average, against ~900 deflated alone. (The demo's
/// patients are made up.) Frozen: what was packed with it reads only with
/// these very bytes (a test pins their hash); a better dictionary is a
/// new first byte.
const DICTIONARY: &[u8] = include_bytes!("packed/dossier-dictionary-1.bin");

/// The stored form of a saved document (none stays none).
pub fn pack(document: &[u8]) -> Vec<u8> {
    if document.is_empty() {
        return Vec::new();
    }
    match deflate(document) {
        Some(p) if p.len() < document.len() => p,
        // Nothing gained (or nothing to gain): kept as it is.
        _ => document.to_vec(),
    }
}

/// `document` deflated from [`DICTIONARY`], after its first byte; `None`
/// once it would not be smaller than the document.
fn deflate(document: &[u8]) -> Option<Vec<u8>> {
    let mut compress = Compress::new(Compression::fast(), false);
    compress.set_dictionary(DICTIONARY).ok()?;
    let mut out = Vec::with_capacity(document.len() / 2 + 64);
    out.push(DEFLATED_WITH_DICTIONARY);
    loop {
        let consumed = compress.total_in() as usize;
        out.reserve(document.len() / 4 + 64);
        let status = compress
            .compress_vec(&document[consumed..], &mut out, FlushCompress::Finish)
            .ok()?;
        if status == Status::StreamEnd {
            return Some(out);
        }
        if out.len() > document.len() {
            return None;
        }
    }
}

/// The saved document a stored one holds. A packed one that does not
/// inflate (a damaged row), or would inflate beyond any message, is
/// returned as stored: its reader's load refuses it like any damaged
/// document (the projector lists it as unreadable, a device says which
/// document is damaged), instead of one row failing a whole read.
pub fn unpack(stored: Vec<u8>) -> Vec<u8> {
    let dictionary = match stored.first() {
        Some(&DEFLATED) => None,
        Some(&DEFLATED_WITH_DICTIONARY) => Some(DICTIONARY),
        _ => return stored,
    };
    inflate(&stored[1..], dictionary).unwrap_or(stored)
}

/// A raw deflate stream inflated (from `dictionary` when given); `None`
/// for one damaged, cut short, or longer than any message once inflated.
fn inflate(stream: &[u8], dictionary: Option<&[u8]>) -> Option<Vec<u8>> {
    let mut decompress = Decompress::new(false);
    if let Some(dictionary) = dictionary {
        decompress.set_dictionary(dictionary).ok()?;
    }
    let mut out = Vec::with_capacity(stream.len() * 3);
    loop {
        if out.len() > MAX_MESSAGE_BYTES {
            return None;
        }
        let (consumed, produced) = (decompress.total_in(), decompress.total_out());
        out.reserve((MAX_MESSAGE_BYTES + 1 - out.len()).min(64 * 1024));
        let status = decompress
            .decompress_vec(
                &stream[consumed as usize..],
                &mut out,
                FlushDecompress::Finish,
            )
            .ok()?;
        if status == Status::StreamEnd {
            return (out.len() <= MAX_MESSAGE_BYTES).then_some(out);
        }
        if decompress.total_in() == consumed && decompress.total_out() == produced {
            // No progress: the stream is cut short.
            return None;
        }
    }
}

/// The packed form of a document stored as it was (by a release before
/// documents were packed), when packing makes it smaller; `None` for one
/// already packed, empty, or that deflate does not shrink.
pub fn repack(stored: &[u8]) -> Option<Vec<u8>> {
    if matches!(stored.first(), Some(&DEFLATED | &DEFLATED_WITH_DICTIONARY)) {
        return None;
    }
    let packed = pack(stored);
    (packed.first() == Some(&DEFLATED_WITH_DICTIONARY)).then_some(packed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved_dossier() -> Vec<u8> {
        let (d, _) = crate::dossier::Dossier::create(
            "d1",
            "44",
            chrono::NaiveDate::from_ymd_opt(2026, 10, 1)
                .unwrap()
                .and_hms_opt(9, 0, 0)
                .unwrap(),
            automerge::ActorId::from(&b"packed"[..]),
            1,
        )
        .unwrap();
        d.save()
    }

    #[test]
    fn a_snapshot_comes_back_as_it_was_and_smaller_when_deflate_helps() {
        let doc = saved_dossier();
        let packed = pack(&doc);
        assert_eq!(unpack(packed.clone()), doc);
        // Repetitive enough that deflate wins: stored packed.
        let repeated: Vec<u8> = doc.iter().chain(&doc).chain(&doc).copied().collect();
        let packed = pack(&repeated);
        assert_eq!(packed[0], DEFLATED_WITH_DICTIONARY);
        assert!(packed.len() < repeated.len() / 2, "{}", packed.len());
        assert_eq!(unpack(packed), repeated);
        // Nothing stays nothing; a snapshot stored as it was reads as it is.
        assert!(pack(&[]).is_empty());
        assert!(unpack(Vec::new()).is_empty());
        assert_eq!(unpack(doc.clone()), doc);
    }

    #[test]
    fn only_a_raw_snapshot_that_deflate_shrinks_is_repacked() {
        let doc = saved_dossier();
        let repeated: Vec<u8> = doc.iter().chain(&doc).chain(&doc).copied().collect();
        let packed = repack(&repeated).expect("a raw, repetitive snapshot is repacked");
        assert_eq!(packed, pack(&repeated));
        assert_eq!(unpack(packed.clone()), repeated);
        assert_eq!(repack(&packed), None, "already packed");
        assert_eq!(repack(&[]), None);
        // Bytes deflate cannot shrink stay as they are.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                // xorshift64: bytes deflate finds nothing in.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert_eq!(pack(&noise), noise);
        assert_eq!(repack(&noise), None);
    }

    #[test]
    fn a_damaged_or_bloated_packed_snapshot_reads_as_stored() {
        let mut damaged = pack(&vec![7u8; 10_000]);
        assert_eq!(damaged[0], DEFLATED_WITH_DICTIONARY);
        damaged.truncate(damaged.len() / 2);
        assert_eq!(unpack(damaged.clone()), damaged);
        for tag in [DEFLATED, DEFLATED_WITH_DICTIONARY] {
            let garbage = vec![tag, 0xff, 0xff, 0xff];
            assert_eq!(unpack(garbage.clone()), garbage);
        }
        // Cut short, packed the old way too.
        let mut old = deflated_without_dictionary(&vec![7u8; 10_000]);
        old.truncate(old.len() / 2);
        assert_eq!(unpack(old.clone()), old);
        // A bomb: inflates beyond any message; not inflated in full.
        let bomb = pack(&vec![0u8; MAX_MESSAGE_BYTES + 10]);
        assert!(bomb.len() * 50 < MAX_MESSAGE_BYTES, "{}", bomb.len());
        assert_eq!(unpack(bomb.clone()), bomb);
        let old_bomb = deflated_without_dictionary(&vec![0u8; MAX_MESSAGE_BYTES + 10]);
        assert_eq!(unpack(old_bomb.clone()), old_bomb);
        // Up to a message's size inflates.
        let largest = vec![0u8; MAX_MESSAGE_BYTES];
        assert_eq!(unpack(pack(&largest)), largest);
    }

    /// A document as a release before the dictionary packed it.
    fn deflated_without_dictionary(document: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::DeflateEncoder::new(vec![DEFLATED], Compression::fast());
        encoder.write_all(document).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_document_packed_before_the_dictionary_reads_as_it_was() {
        let doc = saved_dossier();
        let repeated: Vec<u8> = doc.iter().chain(&doc).chain(&doc).copied().collect();
        for document in [doc, repeated] {
            let old = deflated_without_dictionary(&document);
            assert_eq!(unpack(old.clone()), document);
            assert_eq!(repack(&old), None, "already packed");
        }
    }

    /// The dictionary is the one every stored document packed with it
    /// needs: its bytes may never change.
    #[test]
    fn the_dictionary_is_frozen() {
        use sha2::Digest;
        let hash: String = sha2::Sha256::digest(DICTIONARY)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hash, "6c37a43bef25217f37ef888eb25115f128cf3ae873d79e6a0b2d303724c29ddc",
            "a new dictionary is a new first byte, with this one still read"
        );
    }

    /// The dictionary earns its keep: a dossier packs smaller from it than
    /// deflated alone (what is the same in every dossier is not stored).
    #[test]
    fn a_dossier_packs_smaller_from_the_dictionary() {
        let doc = saved_dossier();
        let packed = pack(&doc);
        let plain = deflated_without_dictionary(&doc);
        assert_eq!(packed[0], DEFLATED_WITH_DICTIONARY);
        assert!(
            packed.len() * 10 < plain.len() * 8,
            "{} bytes from the dictionary, {} without, {} saved",
            packed.len(),
            plain.len(),
            doc.len()
        );
    }
}
