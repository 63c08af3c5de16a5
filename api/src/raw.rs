//! Instances passed through as JSON text.
//!
//! A gateway merging its children's pages of instances needs each instance's id (to merge by) and
//! to put its own name in front of the instance's `zone_path`; the rest it only passes on.
//! Decoding every instance into [`Instance`] and encoding it again cost a parent listing 10 ×
//! 10,000 instances more than anything else it did (docs/benchmarks.md), so lists cross gateways
//! as [`RawInstance`]s: the instance's JSON as its child wrote it, and its id.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::types::Instance;

/// One instance of a list, as JSON text.
#[derive(Debug, Clone)]
pub struct RawInstance {
    id: String,
    json: Box<RawValue>,
    /// Zone names put in front of `zone_path` since the text was read: where they go (just after
    /// the array's `[`) and the names as JSON strings joined by commas. Kept apart and written
    /// with the text ([`RawInstanceList::to_json`]), so an edit costs no second check of the
    /// whole instance: the text was checked when read, and a JSON string inserted at the head of
    /// a top-level array keeps it JSON.
    zone_path_head: Option<(usize, String)>,
}

impl RawInstance {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn from_instance(instance: &Instance) -> serde_json::Result<RawInstance> {
        Ok(RawInstance {
            id: instance.id.clone(),
            json: serde_json::value::to_raw_value(instance)?,
            zone_path_head: None,
        })
    }

    /// The instance, decoded.
    pub fn decode(&self) -> serde_json::Result<Instance> {
        let mut text = String::new();
        self.write_json(&mut text);
        serde_json::from_str(&text)
    }

    /// The instance's JSON text, edits included, appended to `out`.
    pub fn write_json(&self, out: &mut String) {
        let text = self.json.get();
        match &self.zone_path_head {
            None => out.push_str(text),
            Some((at, names)) => {
                out.push_str(&text[..*at]);
                out.push_str(names);
                if !text[*at..].trim_start().starts_with(']') {
                    out.push(',');
                }
                out.push_str(&text[*at..]);
            }
        }
    }

    /// Puts `zone` in front of the instance's `zone_path` (what a gateway does to an answer of its
    /// child): the `zone_path` key of the top-level object, found by a scan that skips strings, so
    /// a key or value of the same text inside a string or a nested object is never taken for it.
    /// False (and nothing changed) when the object has no `zone_path` array.
    pub fn prefix_zone_path(&mut self, zone: &str) -> bool {
        let Ok(name) = serde_json::to_string(zone) else { return false };
        match &mut self.zone_path_head {
            Some((_, names)) => {
                names.insert(0, ',');
                names.insert_str(0, &name);
            }
            None => {
                let Some(at) = zone_path_array_start(self.json.get()) else { return false };
                self.zone_path_head = Some((at, name));
            }
        }
        true
    }
}

/// The byte offset just after the `[` of the top-level object's `"zone_path": [`.
fn zone_path_array_start(text: &str) -> Option<usize> {
    let at = top_level_value(text, "zone_path")?;
    text[at..].starts_with('[').then_some(at + 1)
}

/// The byte offset of the value of the top-level object's `key`, found by a scan that skips
/// strings and nested values: a key of the same text inside a string or a nested object is never
/// taken for it. `text` is one JSON object, already checked to be JSON.
fn top_level_value(text: &str, key: &str) -> Option<usize> {
    let b = text.as_bytes();
    let (mut i, mut depth, mut in_string) = (0, 0usize, false);
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => {
                let rest = &text[i + 1..];
                if depth == 1 && rest.starts_with(key) && rest[key.len()..].starts_with('"') {
                    if let Some(value) = rest[key.len() + 1..].trim_start().strip_prefix(':') {
                        return Some(text.len() - value.trim_start().len());
                    }
                }
                in_string = true;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The top-level `id` of an instance's JSON text: read where it stands (an instance's first key,
/// as both databases and serde write it), not by parsing the whole object a second time.
fn id_of(text: &str) -> Option<String> {
    let at = top_level_value(text, "id")?;
    let mut de = serde_json::Deserializer::from_str(&text[at..]);
    Cow::<str>::deserialize(&mut de).ok().map(Cow::into_owned)
}

impl Serialize for RawInstance {
    /// The text as read when it was not edited; an edited one is checked again here (the way
    /// that costs nothing is [`RawInstanceList::to_json`]).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.zone_path_head.is_none() {
            return self.json.serialize(s);
        }
        let mut text = String::with_capacity(self.json.get().len() + 32);
        self.write_json(&mut text);
        RawValue::from_string(text).map_err(serde::ser::Error::custom)?.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawInstance {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawInstance, D::Error> {
        let json = Box::<RawValue>::deserialize(d)?;
        let id = id_of(json.get()).ok_or_else(|| serde::de::Error::custom("an instance without a string id"))?;
        Ok(RawInstance { id, json, zone_path_head: None })
    }
}

/// [`crate::InstanceList`] with its instances as JSON text: the same body on the wire.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RawInstanceList {
    pub instances: Vec<RawInstance>,
    #[serde(default)]
    pub unreachable_zones: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

impl RawInstanceList {
    /// The typed list a page of instances decodes to (an instance that does not decode is an
    /// error: a zone answered something that is not an instance).
    pub fn decode(&self) -> serde_json::Result<crate::InstanceList> {
        Ok(crate::InstanceList {
            instances: self.instances.iter().map(RawInstance::decode).collect::<Result<_, _>>()?,
            unreachable_zones: self.unreachable_zones.clone(),
            next_marker: self.next_marker.clone(),
        })
    }

    /// The list's JSON: what serde writes for it, each instance's text copied as it stands.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64 + self.instances.iter().map(|i| i.json.get().len() + 16).sum::<usize>());
        out.push_str("{\"instances\":[");
        for (n, i) in self.instances.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            i.write_json(&mut out);
        }
        out.push_str("],\"unreachable_zones\":");
        // Strings: serde_json cannot fail on them.
        out.push_str(&serde_json::to_string(&self.unreachable_zones).unwrap_or_else(|_| "[]".into()));
        if let Some(marker) = &self.next_marker {
            out.push_str(",\"next_marker\":");
            out.push_str(&serde_json::to_string(marker).unwrap_or_else(|_| "null".into()));
        }
        out.push('}');
        out
    }

    pub fn from_list(list: &crate::InstanceList) -> serde_json::Result<RawInstanceList> {
        Ok(RawInstanceList {
            instances: list.instances.iter().map(RawInstance::from_instance).collect::<Result<_, _>>()?,
            unreachable_zones: list.unreachable_zones.clone(),
            next_marker: list.next_marker.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawInstance {
        serde_json::from_str(text).expect("an object with an id")
    }

    fn text(i: &RawInstance) -> String {
        let mut out = String::new();
        i.write_json(&mut out);
        // Serde writes the same, checked.
        assert_eq!(serde_json::to_string(i).expect("edited text is JSON"), out);
        out
    }

    #[test]
    fn the_zone_path_gets_the_gateway_in_front_and_nothing_else_changes() {
        let mut i = raw(r#"{"id":"a1","name":"zone_path","zone_path":["dc1"],"x":{"zone_path":["no"]}}"#);
        assert!(i.prefix_zone_path("region"));
        assert_eq!(text(&i), r#"{"id":"a1","name":"zone_path","zone_path":["region","dc1"],"x":{"zone_path":["no"]}}"#);
        // Spaces as PostgreSQL writes them, a nested object first, an escaped quote in a string.
        let mut i = raw(
            r#"{"id" : "a2", "error_reason" : "said \"zone_path\":[", "r" : {"zone_path" : []}, "zone_path" : []}"#,
        );
        assert!(i.prefix_zone_path("g"));
        assert!(i.prefix_zone_path("root"), "a second gateway above");
        assert_eq!(
            text(&i),
            r#"{"id" : "a2", "error_reason" : "said \"zone_path\":[", "r" : {"zone_path" : []}, "zone_path" : ["root","g"]}"#
        );
        assert_eq!(i.id(), "a2");
        let mut none = raw(r#"{"id":"a3"}"#);
        assert!(!none.prefix_zone_path("g"));
        assert_eq!(text(&none), r#"{"id":"a3"}"#);
    }

    #[test]
    fn a_raw_instance_is_the_instance() {
        let instance = Instance {
            id: "7d0b1c8e-0000-4000-8000-000000000001".into(),
            name: "vm".into(),
            client_id: "acme".into(),
            state: "running".into(),
            host_id: None,
            zone_id: "z".into(),
            zone_path: vec!["dc1".into()],
            resources: crate::Resources { vcpus: 1, memory_mb: 2, disk_gb: 3 },
            requirements: vec![],
            error_reason: Some("a \"quoted\" reason".into()),
            version: 4,
            created_at: "2026-12-03T09:00:00.000Z".into(),
            updated_at: "2026-12-03T09:00:00.001Z".into(),
        };
        let mut r = RawInstance::from_instance(&instance).expect("an instance encodes");
        assert_eq!(r.id(), instance.id);
        assert!(r.prefix_zone_path("region1"));
        let back = r.decode().expect("the edited text is still an instance");
        assert_eq!(back.zone_path, ["region1", "dc1"]);
        assert_eq!(Instance { zone_path: instance.zone_path.clone(), ..back }, instance);
        assert!(serde_json::from_str::<RawInstance>(r#"{"name":"no id"}"#).is_err());
    }

    #[test]
    fn the_id_is_the_top_level_one_wherever_it_stands() {
        assert_eq!(raw(r#"{"id":"a1","name":"x"}"#).id(), "a1");
        // Spaces as PostgreSQL writes them; an id inside a string and a nested object first.
        let r = raw(r#"{ "name" : "say \"id\": \"no\"", "r" : {"id" : "nested"}, "id" : "a\u00e92" }"#);
        assert_eq!(r.id(), "a\u{e9}2");
        // A key that only begins with "id", and an id that is not a string.
        assert_eq!(raw(r#"{"idx":"no","id":"a3"}"#).id(), "a3");
        assert!(serde_json::from_str::<RawInstance>(r#"{"id":7}"#).is_err());
        assert!(serde_json::from_str::<RawInstance>(r#"["id","a4"]"#).is_err());
    }

    #[test]
    fn a_list_written_by_hand_is_what_serde_writes() {
        let mut edited = raw(r#"{"id":"a1","zone_path":[]}"#);
        assert!(edited.prefix_zone_path("dc \"1\""));
        let list = RawInstanceList {
            instances: vec![edited, raw(r#"{"id":"a2","zone_path":["x"]}"#)],
            unreachable_zones: vec!["r/z".into()],
            next_marker: Some("a2".into()),
        };
        assert_eq!(list.to_json(), serde_json::to_string(&list).expect("a list encodes"));
        let back: RawInstanceList = serde_json::from_str(&list.to_json()).expect("and decodes");
        assert_eq!(text(&back.instances[0]), r#"{"id":"a1","zone_path":["dc \"1\""]}"#);
        let empty = RawInstanceList::default();
        assert_eq!(empty.to_json(), serde_json::to_string(&empty).expect("a list encodes"));
    }
}
