//! How saved documents are kept at rest: deflated (the server's stores keep
//! each dossier's snapshot so, and a device's replica each document). A
//! saved automerge document compresses its columns only above a few
//! hundred bytes, so a dossier's 2.5 KB holds much that repeats (keys,
//! actors, Chinese text): deflated it takes ~0.9 KB (the national
//! benchmark's dossiers). A store packs what it is given and unpacks what
//! it reads, so above it a document is the automerge bytes as ever. Pure
//! computation on bytes in memory, like the rest of this crate.

use crate::sync::limits::MAX_MESSAGE_BYTES;
use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use std::io::{Read, Write};

/// First byte of a packed document: a raw deflate stream follows. A saved
/// automerge document begins with its magic bytes (`85 6f 4a 83`), so a
/// document stored as it was (by an older release, or one deflate would
/// not make smaller) is told apart and read as it is.
const DEFLATED: u8 = 0x01;

/// The stored form of a saved document (none stays none).
pub fn pack(document: &[u8]) -> Vec<u8> {
    if document.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(document.len() / 2 + 8);
    out.push(DEFLATED);
    // The encoder appends the deflate stream after the tag.
    let mut encoder = DeflateEncoder::new(out, Compression::fast());
    let packed = encoder.write_all(document).and_then(|()| encoder.finish());
    match packed {
        Ok(p) if p.len() < document.len() => p,
        // Nothing gained (or nothing to gain): kept as it is.
        _ => document.to_vec(),
    }
}

/// The saved document a stored one holds. A packed one that does not
/// inflate (a damaged row), or would inflate beyond any message, is
/// returned as stored: its reader's load refuses it like any damaged
/// document (the projector lists it as unreadable, a device says which
/// document is damaged), instead of one row failing a whole read.
pub fn unpack(stored: Vec<u8>) -> Vec<u8> {
    if stored.first() != Some(&DEFLATED) {
        return stored;
    }
    let limit = MAX_MESSAGE_BYTES as u64 + 1;
    let mut out = Vec::with_capacity(stored.len() * 3);
    let inflated = DeflateDecoder::new(&stored[1..])
        .take(limit)
        .read_to_end(&mut out);
    match inflated {
        Ok(n) if (n as u64) < limit => out,
        _ => stored,
    }
}

/// The packed form of a document stored as it was (by a release before
/// documents were packed), when packing makes it smaller; `None` for one
/// already packed, empty, or that deflate does not shrink.
pub fn repack(stored: &[u8]) -> Option<Vec<u8>> {
    if stored.first() == Some(&DEFLATED) {
        return None;
    }
    let packed = pack(stored);
    (packed.first() == Some(&DEFLATED)).then_some(packed)
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
        assert_eq!(packed[0], DEFLATED);
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
        assert_eq!(damaged[0], DEFLATED);
        damaged.truncate(damaged.len() / 2);
        assert_eq!(unpack(damaged.clone()), damaged);
        let garbage = vec![DEFLATED, 0xff, 0xff, 0xff];
        assert_eq!(unpack(garbage.clone()), garbage);
        // A bomb: inflates beyond any message; not inflated in full.
        let bomb = pack(&vec![0u8; MAX_MESSAGE_BYTES + 10]);
        assert!(bomb.len() * 50 < MAX_MESSAGE_BYTES, "{}", bomb.len());
        assert_eq!(unpack(bomb.clone()), bomb);
    }
}
