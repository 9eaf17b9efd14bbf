//! Postcard decoding with bounds no input can pass.
//!
//! postcard trusts the lengths and shapes it reads: a sequence announces
//! its length, and if its elements take no bytes (`Vec<()>`, a unit
//! struct) it loops that many times, up to 2^64, on a few bytes of input;
//! a recursive type (`enum Tree { Leaf, Node(Box<Tree>) }`) recurses once
//! per byte of input until the stack overflows, which aborts the process.
//! Every postcard value that comes off the network goes through
//! [`from_bytes`] or [`take_from_bytes`] instead, which decode exactly as
//! postcard does but refuse
//! - a sequence or map that announces more elements than bytes are left
//!   (each element of real data takes at least one byte, but for elements
//!   of zero size; work stays bounded by the input's size either way);
//! - values nested deeper than [`MAX_DEPTH`].
//!
//! They do it by standing between serde and postcard's deserializer,
//! wrapping every visitor, sequence, map and enum on the way down.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

use postcard::de_flavors::Flavor;
use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

/// How deep values may nest: past any protocol message and any sane
/// argument, and far from the stack's end (said in the error as 64).
pub(crate) const MAX_DEPTH: usize = 64;

/// Why bytes did not decode: postcard's reason, or the bound they passed.
#[derive(Debug)]
pub struct DecodeError {
    bound: Option<&'static str>,
    postcard: postcard::Error,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bound {
            Some(bound) => f.write_str(bound),
            None => fmt::Display::fmt(&self.postcard, f),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes a `T` from the front of `bytes`, as `postcard::from_bytes`.
pub(crate) fn from_bytes<'de, T: de::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, DecodeError> {
    take_from_bytes(bytes).map(|(value, _)| value)
}

/// Decodes a `T` from the front of `bytes` and returns the rest, as
/// `postcard::take_from_bytes`.
pub(crate) fn take_from_bytes<'de, T: de::Deserialize<'de>>(bytes: &'de [u8]) -> Result<(T, &'de [u8]), DecodeError> {
    let left = Rc::new(Cell::new(bytes.len()));
    let mut postcard = postcard::Deserializer::from_flavor(Counted {
        bytes,
        left: Rc::clone(&left),
    });
    let bounds = Bounds {
        left,
        depth: Cell::new(0),
        passed: Cell::new(None),
    };
    let fail = |postcard| DecodeError {
        bound: bounds.passed.get(),
        postcard,
    };
    let value = T::deserialize(Bounded {
        inner: &mut postcard,
        bounds: &bounds,
    })
    .map_err(fail)?;
    Ok((value, postcard.finalize().map_err(fail)?))
}

/// The input, telling the bounds how much of it is left.
struct Counted<'de> {
    bytes: &'de [u8],
    left: Rc<Cell<usize>>,
}

impl<'de> Flavor<'de> for Counted<'de> {
    type Remainder = &'de [u8];
    type Source = &'de [u8];

    fn pop(&mut self) -> postcard::Result<u8> {
        Ok(self.try_take_n(1)?[0])
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.bytes.len())
    }

    fn try_take_n(&mut self, ct: usize) -> postcard::Result<&'de [u8]> {
        if ct > self.bytes.len() {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        let (head, rest) = self.bytes.split_at(ct);
        self.bytes = rest;
        self.left.set(rest.len());
        Ok(head)
    }

    fn finalize(self) -> postcard::Result<&'de [u8]> {
        Ok(self.bytes)
    }
}

struct Bounds {
    left: Rc<Cell<usize>>,
    depth: Cell<usize>,
    /// The bound the input passed, if it did: postcard keeps no message.
    passed: Cell<Option<&'static str>>,
}

impl Bounds {
    /// Runs `inside` one level deeper, if that is allowed.
    fn nested<T, E: de::Error>(&self, inside: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let depth = self.depth.get() + 1;
        if depth > MAX_DEPTH {
            return Err(self.refuse("values nest deeper than 64 levels"));
        }
        self.depth.set(depth);
        let result = inside();
        self.depth.set(depth - 1);
        result
    }

    fn check_len<E: de::Error>(&self, announced: Option<usize>) -> Result<(), E> {
        match announced {
            Some(len) if len <= self.left.get() => Ok(()),
            _ => Err(self.refuse("a sequence announces more elements than bytes are left")),
        }
    }

    fn refuse<E: de::Error>(&self, bound: &'static str) -> E {
        self.passed.set(Some(bound));
        E::custom(bound)
    }
}

/// A deserializer whose every nested value goes through the bounds.
struct Bounded<'b, D> {
    inner: D,
    bounds: &'b Bounds,
}

/// A visitor that wraps what it is given before its inner visitor sees it.
/// `counted` says the input announced the length (a sequence or a map, not
/// a tuple or a struct, whose lengths the type gives).
struct Wrap<'b, V> {
    inner: V,
    bounds: &'b Bounds,
    counted: bool,
}

macro_rules! forward_deserialize {
    ($($method:ident $(($($arg:ident: $ty:ty),*))?),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, $($($arg: $ty,)*)? visitor: V) -> Result<V::Value, D::Error> {
            let visitor = Wrap { inner: visitor, bounds: self.bounds, counted: false };
            self.inner.$method($($($arg,)*)? visitor)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Bounded<'_, D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any, deserialize_bool, deserialize_i8, deserialize_i16, deserialize_i32,
        deserialize_i64, deserialize_i128, deserialize_u8, deserialize_u16, deserialize_u32,
        deserialize_u64, deserialize_u128, deserialize_f32, deserialize_f64, deserialize_char,
        deserialize_str, deserialize_string, deserialize_bytes, deserialize_byte_buf,
        deserialize_option, deserialize_unit, deserialize_identifier, deserialize_ignored_any,
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let visitor = Wrap {
            inner: visitor,
            bounds: self.bounds,
            counted: true,
        };
        self.inner.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let visitor = Wrap {
            inner: visitor,
            bounds: self.bounds,
            counted: true,
        };
        self.inner.deserialize_map(visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool), visit_i8(i8), visit_i16(i16), visit_i32(i32), visit_i64(i64),
        visit_i128(i128), visit_u8(u8), visit_u16(u16), visit_u32(u32), visit_u64(u64),
        visit_u128(u128), visit_f32(f32), visit_f64(f64), visit_char(char), visit_str(&str),
        visit_borrowed_str(&'de str), visit_string(String), visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]), visit_byte_buf(Vec<u8>),
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let bounds = self.bounds;
        bounds.nested(|| self.inner.visit_some(Bounded { inner: d, bounds }))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let bounds = self.bounds;
        bounds.nested(|| self.inner.visit_newtype_struct(Bounded { inner: d, bounds }))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let bounds = self.bounds;
        if self.counted {
            bounds.check_len(seq.size_hint())?;
        }
        bounds.nested(|| self.inner.visit_seq(Bounded { inner: seq, bounds }))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let bounds = self.bounds;
        if self.counted {
            bounds.check_len(map.size_hint())?;
        }
        bounds.nested(|| self.inner.visit_map(Bounded { inner: map, bounds }))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        let bounds = self.bounds;
        bounds.nested(|| self.inner.visit_enum(Bounded { inner: data, bounds }))
    }
}

/// A seed whose value goes through the bounds.
struct Seed<'b, S> {
    inner: S,
    bounds: &'b Bounds,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.deserialize(Bounded {
            inner: d,
            bounds: self.bounds,
        })
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Bounded<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, A::Error> {
        let bounds = self.bounds;
        self.inner.next_element_seed(Seed { inner: seed, bounds })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Bounded<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        let bounds = self.bounds;
        self.inner.next_key_seed(Seed { inner: seed, bounds })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        let bounds = self.bounds;
        self.inner.next_value_seed(Seed { inner: seed, bounds })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'b, 'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Bounded<'b, A> {
    type Error = A::Error;
    type Variant = Bounded<'b, A::Variant>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self::Variant), A::Error> {
        let bounds = self.bounds;
        let (value, variant) = self.inner.variant_seed(Seed { inner: seed, bounds })?;
        Ok((value, Bounded { inner: variant, bounds }))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Bounded<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let bounds = self.bounds;
        self.inner.newtype_variant_seed(Seed { inner: seed, bounds })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = Wrap {
            inner: visitor,
            bounds: self.bounds,
            counted: false,
        };
        self.inner.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = Wrap {
            inner: visitor,
            bounds: self.bounds,
            counted: false,
        };
        self.inner.struct_variant(fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Unit;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Everything {
        flag: bool,
        small: i8,
        big: u128,
        float: f64,
        text: String,
        bytes: Vec<u8>,
        maybe: Option<(u16, char)>,
        list: Vec<i64>,
        map: BTreeMap<String, u32>,
        choice: Choice,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Choice {
        Unit,
        Newtype(u32),
        Tuple(u8, String),
        Struct { a: i32, b: Vec<bool> },
    }

    fn choice() -> impl Strategy<Value = Choice> {
        prop_oneof![
            Just(Choice::Unit),
            any::<u32>().prop_map(Choice::Newtype),
            (any::<u8>(), ".{0,8}").prop_map(|(a, b)| Choice::Tuple(a, b)),
            (any::<i32>(), proptest::collection::vec(any::<bool>(), 0..4)).prop_map(|(a, b)| Choice::Struct { a, b }),
        ]
    }

    fn everything() -> impl Strategy<Value = Everything> {
        use proptest::collection::{btree_map, vec};
        (
            (any::<bool>(), any::<i8>(), any::<u128>(), -1e300f64..1e300),
            (
                ".{0,16}",
                vec(any::<u8>(), 0..32),
                proptest::option::of((any::<u16>(), any::<char>())),
            ),
            (
                vec(any::<i64>(), 0..8),
                btree_map(".{0,4}", any::<u32>(), 0..4),
                choice(),
            ),
        )
            .prop_map(
                |((flag, small, big, float), (text, bytes, maybe), (list, map, choice))| Everything {
                    flag,
                    small,
                    big,
                    float,
                    text,
                    bytes,
                    maybe,
                    list,
                    map,
                    choice,
                },
            )
    }

    #[test]
    fn a_sequence_of_nothing_announcing_a_huge_length_is_refused_at_once() {
        // A length of 2^63 in six bytes, then nothing.
        let bytes = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
        let started = std::time::Instant::now();
        let err = from_bytes::<Vec<()>>(&bytes).unwrap_err();
        println!("refused in {:?}: {err}", started.elapsed());
        assert_eq!(
            err.to_string(),
            "a sequence announces more elements than bytes are left"
        );
        assert!(from_bytes::<Vec<Unit>>(&bytes).is_err());
        assert!(from_bytes::<BTreeMap<(), ()>>(&bytes).is_err());
        // Short of the bytes left, it decodes as postcard would.
        assert_eq!(from_bytes::<Vec<()>>(&[3, 0, 0, 0]).unwrap(), vec![(); 3]);
    }

    #[test]
    fn nesting_is_bounded_and_stops_short_of_the_stack() {
        let deep = |n: usize| {
            let mut bytes = vec![1u8; n];
            bytes.push(0);
            bytes
        };
        let mut tree = Tree::Leaf;
        for _ in 0..MAX_DEPTH - 1 {
            tree = Tree::Node(Box::new(tree));
        }
        assert_eq!(from_bytes::<Tree>(&deep(MAX_DEPTH - 1)).unwrap(), tree);
        let err = from_bytes::<Tree>(&deep(MAX_DEPTH)).unwrap_err();
        assert_eq!(err.to_string(), "values nest deeper than 64 levels");
        // A million levels: postcard alone overflows the stack here.
        assert!(from_bytes::<Tree>(&deep(1_000_000)).is_err());
    }

    proptest! {
        #[test]
        fn decodes_whatever_postcard_writes_as_postcard_does(value in everything()) {
            let bytes = postcard::to_allocvec(&value).unwrap();
            prop_assert_eq!(from_bytes::<Everything>(&bytes).unwrap(), value.clone());
            let (again, rest) = take_from_bytes::<Everything>(&[&bytes[..], b"tail"].concat()).map(|(v, r)| (v, r.to_vec())).unwrap();
            prop_assert_eq!(again, value);
            prop_assert_eq!(rest, b"tail".to_vec());
        }

        #[test]
        fn never_panics_and_agrees_with_postcard_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let ours = from_bytes::<Everything>(&bytes).ok();
            let theirs = postcard::from_bytes::<Everything>(&bytes).ok();
            prop_assert_eq!(ours, theirs);
        }
    }
}
