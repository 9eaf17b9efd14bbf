//! What a service declares, in data: Malla's `:precompile` entry. Generated
//! services carry a `'static` manifest registered at link time, so a node
//! knows every declared service and stub before it starts
//! ([`declared_services`]). Manifests also travel in gossip, so they
//! serialize.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// A service's name, version, scope and methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceManifest {
    name: Cow<'static, str>,
    vsn: Cow<'static, str>,
    global: bool,
    methods: Cow<'static, [MethodManifest]>,
}

/// One method of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodManifest {
    name: Cow<'static, str>,
    id: u32,
    args: Cow<'static, [ArgManifest]>,
    ret: Cow<'static, str>,
    signature: u64,
    idempotent: bool,
    timeout_ms: Option<u64>,
}

/// One argument of a method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgManifest {
    name: Cow<'static, str>,
    ty: Cow<'static, str>,
}

impl ServiceManifest {
    #[doc(hidden)]
    pub const fn __new(
        name: &'static str,
        vsn: &'static str,
        global: bool,
        methods: &'static [MethodManifest],
    ) -> Self {
        ServiceManifest {
            name: Cow::Borrowed(name),
            vsn: Cow::Borrowed(vsn),
            global,
            methods: Cow::Borrowed(methods),
        }
    }

    /// Wire name of the service (the trait name unless `name = "…"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Version (`vsn = "…"`), empty if none was given.
    pub fn vsn(&self) -> &str {
        &self.vsn
    }

    /// Whether the service is published cluster-wide (`global`).
    pub fn is_global(&self) -> bool {
        self.global
    }

    /// Methods in declaration order.
    pub fn methods(&self) -> &[MethodManifest] {
        &self.methods
    }

    /// The method with this name.
    pub fn method(&self, name: &str) -> Option<&MethodManifest> {
        self.methods.iter().find(|m| m.name == name)
    }

    #[inline]
    pub(crate) fn name_cow(&self) -> Cow<'static, str> {
        self.name.clone()
    }
}

impl MethodManifest {
    #[doc(hidden)]
    pub const fn __new(
        name: &'static str,
        id: u32,
        args: &'static [ArgManifest],
        ret: &'static str,
        signature: u64,
        idempotent: bool,
        timeout_ms: Option<u64>,
    ) -> Self {
        MethodManifest {
            name: Cow::Borrowed(name),
            id,
            args: Cow::Borrowed(args),
            ret: Cow::Borrowed(ret),
            signature,
            idempotent,
            timeout_ms,
        }
    }

    /// A method known only by name (a dynamic call): its id derives from the
    /// name; its signature is unchecked (0).
    pub(crate) fn unchecked(name: &str) -> Self {
        MethodManifest {
            name: Cow::Owned(name.to_owned()),
            id: method_id(name),
            args: Cow::Borrowed(&[]),
            ret: Cow::Borrowed(""),
            signature: 0,
            idempotent: false,
            timeout_ms: None,
        }
    }

    /// Method name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Wire id, derived from the name.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Arguments after `&self`.
    pub fn args(&self) -> &[ArgManifest] {
        &self.args
    }

    /// Return type, normalized (`Option<String>`).
    pub fn ret(&self) -> &str {
        &self.ret
    }

    /// Hash of the method name and its argument and return types. A caller
    /// and a server that disagree on it get `Error::SignatureMismatch`.
    pub fn signature(&self) -> u64 {
        self.signature
    }

    /// Whether the call may be re-sent to another node after the first one
    /// died mid-call (`#[malla(idempotent)]`).
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// Default deadline of the method (`#[malla(timeout_ms = …)]`).
    pub fn timeout_ms(&self) -> Option<u64> {
        self.timeout_ms
    }

    #[inline]
    pub(crate) fn name_cow(&self) -> Cow<'static, str> {
        self.name.clone()
    }
}

impl ArgManifest {
    #[doc(hidden)]
    pub const fn __new(name: &'static str, ty: &'static str) -> Self {
        ArgManifest {
            name: Cow::Borrowed(name),
            ty: Cow::Borrowed(ty),
        }
    }

    /// Argument name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Argument type, normalized (`Vec<u8>`).
    pub fn ty(&self) -> &str {
        &self.ty
    }
}

/// The wire id of a method name: the first 4 bytes of
/// `sha256("malla-method:" + name)`, as `malla-codegen` computes it.
pub(crate) fn method_id(name: &str) -> u32 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("malla-method:{name}").as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// A manifest registered at link time by generated code.
#[doc(hidden)]
pub struct DeclaredService(&'static ServiceManifest);

impl DeclaredService {
    #[doc(hidden)]
    pub const fn new(manifest: &'static ServiceManifest) -> Self {
        DeclaredService(manifest)
    }
}

inventory::collect!(DeclaredService);

/// Every service compiled into this binary, from `#[malla::service]` traits
/// and from `malla-build` stubs, known before any node starts.
///
/// ```
/// for manifest in malla_runtime::declared_services() {
///     println!("{} {}", manifest.name(), manifest.vsn());
/// }
/// ```
pub fn declared_services() -> impl Iterator<Item = &'static ServiceManifest> {
    inventory::iter::<DeclaredService>.into_iter().map(|d| d.0)
}

/// The declared manifest with this wire name, if any.
pub fn declared_service(name: &str) -> Option<&'static ServiceManifest> {
    declared_services().find(|m| m.name() == name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn method_ids_match_the_code_generator() {
        // Pinned in malla-codegen's `signature::tests::wire_values_are_stable`.
        assert_eq!(super::method_id("add"), 0xda6c_24dd);
    }
}
