//! Build-script helper for malla: generates typed stubs for services whose
//! crate is not a dependency, from a manifest. (Skeleton: the generator lands
//! with the precompiled-stubs work.)
