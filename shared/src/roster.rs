//! The office roster: the staff of one office, as one automerge document
//! shared by the office's devices.
//!
//! Every device of an office creates the roster on its own, offline. To keep
//! two such copies from fighting over the `staff` map (two different map
//! objects under one key would hide one device's staff), the first change is
//! made deterministically: a fixed actor derived from the office code, a
//! fixed time, the same operations. Every device produces the byte-identical
//! genesis change with the same hash, so the copies share one `staff` map and
//! merge cleanly.

use crate::DomainError;
use crate::dossier::NewChange;
use crate::staff::{Role, Staff};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ObjId, ObjType, ROOT, ReadDoc, Value};

const STAFF: &str = "staff";
const PASSWORD: &str = "password";
/// Root keys `activity/<id>`: the office's own activities.
const ACTIVITY_PREFIX: &str = "activity/";
/// The most activities of an office that are read.
pub const MAX_ACTIVITIES: usize = 500;
/// An Argon2id hash in PHC form is under 100 bytes with our parameters;
/// anything much longer did not come from us.
const PASSWORD_HASH_MAX_BYTES: usize = 256;

/// The document id of an office's roster.
pub fn roster_id(office: &str) -> String {
    format!("roster-{office}")
}

pub struct Roster {
    doc: Automerge,
}

impl Roster {
    /// The genesis of an office's roster: identical on every device.
    pub fn genesis(office: &str) -> Result<(Roster, NewChange), DomainError> {
        let actor = ActorId::from(format!("keqing-roster-{office}").into_bytes());
        let mut doc = Automerge::new().with_actor(actor);
        doc.transact_with(
            |_| CommitOptions::default().with_time(0),
            |tx| -> Result<(), DomainError> {
                tx.put(ROOT, "office", office)?;
                tx.put_object(ROOT, STAFF, ObjType::Map)?;
                Ok(())
            },
        )
        .map_err(|f| f.error)?;
        let change = doc
            .get_last_local_change()
            .map(|c| NewChange {
                hash: c.hash(),
                bytes: c.raw_bytes().to_vec(),
            })
            .ok_or_else(|| DomainError::Malformed("empty genesis".into()))?;
        Ok((Roster { doc }, change))
    }

    pub fn load(bytes: &[u8], actor: ActorId) -> Result<Roster, DomainError> {
        let doc = Automerge::load(bytes)?.with_actor(actor);
        let r = Roster { doc };
        r.staff_obj()?;
        Ok(r)
    }

    pub fn with_actor(mut self, actor: ActorId) -> Roster {
        self.doc.set_actor(actor);
        self
    }

    /// Stored without DEFLATE, like a dossier ([`crate::dossier::Dossier::save`]).
    pub fn save(&self) -> Vec<u8> {
        self.doc.save_nocompress()
    }

    fn staff_obj(&self) -> Result<ObjId, DomainError> {
        match self.doc.get(ROOT, STAFF)? {
            Some((Value::Object(ObjType::Map), id)) => Ok(id),
            _ => Err(DomainError::Malformed("roster has no staff map".into())),
        }
    }

    /// Adds a member; the caller checks the name is not taken.
    pub fn add(&mut self, staff: &Staff, time_ms: i64) -> Result<NewChange, DomainError> {
        let map = self.staff_obj()?;
        self.doc
            .transact_with(
                |_| CommitOptions::default().with_time(time_ms),
                |tx| -> Result<(), DomainError> {
                    let m = tx.put_object(&map, staff.id.as_str(), ObjType::Map)?;
                    tx.put(&m, "name", staff.name.as_str())?;
                    tx.put(&m, "role", staff.role.as_str())?;
                    tx.put(&m, "active", staff.active)?;
                    Ok(())
                },
            )
            .map_err(|f| f.error)?;
        self.last_change()
    }

    /// Marks a member 在岗 or 离岗 (kept, with their history; gone from pick
    /// lists while 离岗).
    pub fn set_active(
        &mut self,
        id: &str,
        active: bool,
        time_ms: i64,
    ) -> Result<Option<NewChange>, DomainError> {
        self.put_on_member(id, "active", active, time_ms)
    }

    /// Puts `key` = `value` on member `id`: the change, or none when the
    /// value was already there.
    fn put_on_member(
        &mut self,
        id: &str,
        key: &str,
        value: impl Into<automerge::ScalarValue>,
        time_ms: i64,
    ) -> Result<Option<NewChange>, DomainError> {
        let map = self.staff_obj()?;
        let member = match self.doc.get(&map, id)? {
            Some((Value::Object(ObjType::Map), m)) => m,
            _ => return Err(DomainError::UnknownRecord(id.to_string())),
        };
        let value = value.into();
        let outcome = self
            .doc
            .transact_with(
                |_| CommitOptions::default().with_time(time_ms),
                |tx| -> Result<(), DomainError> {
                    tx.put(&member, key, value)?;
                    Ok(())
                },
            )
            .map_err(|f| f.error)?;
        Ok(outcome.hash.and_then(|_| {
            self.doc.get_last_local_change().map(|c| NewChange {
                hash: c.hash(),
                bytes: c.raw_bytes().to_vec(),
            })
        }))
    }

    /// Sets (or replaces) a member's password, given as its Argon2id hash in
    /// PHC form (`$argon2id$…`): the only form a password is kept in, so any
    /// device of the office can sign the member in offline. The hash comes
    /// from the office library (hashing takes a random salt); this checks
    /// its form and length only.
    pub fn set_password(
        &mut self,
        id: &str,
        phc: &str,
        time_ms: i64,
    ) -> Result<NewChange, DomainError> {
        if !phc.starts_with("$argon2id$") || phc.len() > PASSWORD_HASH_MAX_BYTES {
            return Err(DomainError::invalid(
                "password",
                "not an Argon2id hash in PHC form",
            ));
        }
        self.put_on_member(id, PASSWORD, phc, time_ms)?
            .ok_or_else(|| DomainError::Malformed("no change".into()))
    }

    /// A member's password hash (PHC form), if they have one. Two devices
    /// that set it offline at once: automerge keeps one, the same on every
    /// device.
    pub fn password_of(&self, id: &str) -> Result<Option<String>, DomainError> {
        let map = self.staff_obj()?;
        let Some((Value::Object(ObjType::Map), member)) = self.doc.get(&map, id)? else {
            return Err(DomainError::UnknownRecord(id.to_string()));
        };
        Ok(self
            .doc
            .get(&member, PASSWORD)?
            .and_then(|(v, _)| v.as_str().map(str::to_string))
            .filter(|h| h.starts_with("$argon2id$")))
    }

    /// Defines one of the office's own activities (活动): a root key of its
    /// own (`activity/<id>`, the activity as JSON), so two devices defining
    /// activities offline never race to create a shared container (the
    /// genesis has none, and rosters made before activities existed
    /// neither).
    pub fn add_activity(
        &mut self,
        activity: &crate::activity::Activity,
        time_ms: i64,
    ) -> Result<NewChange, DomainError> {
        activity.check()?;
        let key = format!("{ACTIVITY_PREFIX}{}", activity.id);
        if self.doc.get(ROOT, key.as_str())?.is_some() {
            return Err(DomainError::invalid(
                "id",
                format!("activity {} exists", activity.id),
            ));
        }
        let json =
            serde_json::to_string(activity).map_err(|e| DomainError::Malformed(e.to_string()))?;
        self.doc
            .transact_with(
                |_| CommitOptions::default().with_time(time_ms),
                |tx| -> Result<(), DomainError> {
                    tx.put(ROOT, key.as_str(), json.as_str())?;
                    Ok(())
                },
            )
            .map_err(|f| f.error)?;
        self.last_change()
    }

    /// The office's own activities, by start then id. What a device wrote
    /// that is not a sound activity of this office (or past the first
    /// [`MAX_ACTIVITIES`]) is left out: every device reads the same list.
    pub fn activities(&self) -> Vec<crate::activity::Activity> {
        let office = self
            .doc
            .get(ROOT, "office")
            .ok()
            .flatten()
            .and_then(|(v, _)| v.as_str().map(str::to_string));
        let mut out: Vec<crate::activity::Activity> = self
            .doc
            .map_range(ROOT, ..)
            .filter(|item| item.key.starts_with(ACTIVITY_PREFIX))
            .filter_map(|item| match item.value {
                automerge::ValueRef::Scalar(automerge::ScalarValueRef::Str(json)) => {
                    serde_json::from_str::<crate::activity::Activity>(&json).ok()
                }
                _ => None,
            })
            .filter(|a| {
                a.by_office.is_some()
                    && a.by_office == office
                    && a.offices.is_empty()
                    && a.check().is_ok()
            })
            .take(MAX_ACTIVITIES)
            .collect();
        out.sort_by(|a, b| a.starts.cmp(&b.starts).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// The change this device made last.
    fn last_change(&self) -> Result<NewChange, DomainError> {
        self.doc
            .get_last_local_change()
            .map(|c| NewChange {
                hash: c.hash(),
                bytes: c.raw_bytes().to_vec(),
            })
            .ok_or_else(|| DomainError::Malformed("no change".into()))
    }

    pub fn staff(&self) -> Result<Vec<Staff>, DomainError> {
        let map = self.staff_obj()?;
        let mut out = Vec::new();
        for item in self.doc.map_range(&map, ..) {
            let id = item.id();
            let get = |k: &str| -> Option<Value<'_>> {
                self.doc.get(&id, k).ok().flatten().map(|(v, _)| v)
            };
            let name = get("name").and_then(|v| v.as_str().map(str::to_string));
            let role = get("role").and_then(|v| v.as_str().and_then(|r| Role::parse(r).ok()));
            let active = get("active").and_then(|v| v.as_bool()).unwrap_or(true);
            if let (Some(name), Some(role)) = (name, role) {
                out.push(Staff {
                    id: item.key.to_string(),
                    name,
                    role,
                    active,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_is_identical_on_every_device_and_rosters_merge() {
        let (a, ga) = Roster::genesis("44").unwrap();
        let (b, gb) = Roster::genesis("44").unwrap();
        assert_eq!(ga, gb, "same hash and bytes on every device");
        let mut a = a.with_actor(ActorId::from(b"device-a"));
        let mut b = b.with_actor(ActorId::from(b"device-b"));
        let s = |id: &str, name: &str| Staff {
            id: id.into(),
            name: name.into(),
            role: Role::Consultant,
            active: true,
        };
        a.add(&s("1", "李娜"), 1).unwrap();
        b.add(&s("2", "王芳"), 2).unwrap();
        a.doc.merge(&mut b.doc).unwrap();
        let mut names: Vec<String> = a.staff().unwrap().into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(names, ["李娜", "王芳"]);
        assert_ne!(Roster::genesis("11").unwrap().1.hash, ga.hash);
    }

    #[test]
    fn office_activities_from_two_devices_merge_and_foreign_ones_are_ignored() {
        use crate::activity::{Activity, ActivityKind};
        let (a, _) = Roster::genesis("44").unwrap();
        let (b, _) = Roster::genesis("44").unwrap();
        let mut a = a.with_actor(ActorId::from(b"device-a"));
        let mut b = b.with_actor(ActorId::from(b"device-b"));
        let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let act = |id: &str, office: &str| Activity {
            id: id.into(),
            name: "社区讲座".into(),
            kind: ActivityKind::Lecture,
            starts: day(3),
            ends: day(3),
            offices: vec![],
            source: None,
            by_office: Some(office.into()),
        };
        a.add_activity(&act("44-a", "44"), 1).unwrap();
        b.add_activity(&act("44-b", "44"), 2).unwrap();
        assert!(a.add_activity(&act("44-a", "44"), 3).is_err(), "twice");
        // A device of another office (or a careless one) wrote an activity
        // of office 11 into 44's roster: nobody reads it.
        b.doc
            .transact::<_, _, automerge::AutomergeError>(|tx| {
                let json = serde_json::to_string(&act("11-x", "11")).unwrap();
                tx.put(ROOT, "activity/11-x", json.as_str())?;
                tx.put(ROOT, "activity/junk", "{not json")?;
                Ok(())
            })
            .unwrap();
        a.doc.merge(&mut b.doc).unwrap();
        let ids: Vec<String> = a.activities().into_iter().map(|x| x.id).collect();
        assert_eq!(ids, ["44-a", "44-b"]);
        assert!(a.staff().unwrap().is_empty(), "the staff map is untouched");
    }

    #[test]
    fn a_password_hash_is_kept_per_member_and_merges() {
        let (a, _) = Roster::genesis("44").unwrap();
        let mut a = a.with_actor(ActorId::from(b"device-a"));
        let member = Staff {
            id: "1".into(),
            name: "李娜".into(),
            role: Role::Supervisor,
            active: true,
        };
        a.add(&member, 1).unwrap();
        assert_eq!(a.password_of("1").unwrap(), None);
        let refused = a.set_password("1", "plain text", 2).unwrap_err();
        assert!(refused.to_string().contains("Argon2id"), "{refused}");
        assert!(
            a.set_password("9", "$argon2id$v=19$x", 2).is_err(),
            "no such member"
        );
        a.set_password("1", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", 3)
            .unwrap();
        let mut b = Roster::load(&a.save(), ActorId::from(b"device-b")).unwrap();
        assert_eq!(
            b.password_of("1").unwrap().as_deref(),
            Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
            "another device reads it from the document"
        );
        b.set_password("1", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdB$aGFzaB", 4)
            .unwrap();
        a.doc.merge(&mut b.doc).unwrap();
        assert_eq!(a.password_of("1").unwrap(), b.password_of("1").unwrap());
        assert_eq!(
            a.staff().unwrap()[0].name,
            "李娜",
            "the member is untouched"
        );
    }
}
