//! The runtime's shape, checked: every module imports only modules of its
//! own layer or of the layers listed before it in the crate docs' table
//! (`src/lib.rs`, "# Layers"), and no two files import each other, however
//! indirectly. Imports are read from the source: `use crate::…` and
//! `crate::…` paths, grouped imports (`use crate::{a, b::C}`), names the
//! crate root or a parent module re-exports (`use crate::{Error}` is the
//! `error` module's), and `super::…`. Test code (`tests.rs`, `#[cfg(test)]`
//! items) may reach any layer, to wire one up, and is not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A source file: its path under `src/` (`connection/link.rs`) and text.
type Source = (String, String);

#[test]
fn modules_import_only_their_layer_and_the_layers_below() {
    let sources = read_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let problems = check(&sources);
    for problem in &problems {
        eprintln!("{problem}");
    }
    println!("{} files checked", sources.len());
    assert!(problems.is_empty(), "{} layer problems (listed above)", problems.len());
}

#[test]
fn an_upward_import_is_reported() {
    let lib = "//! # Layers\n//!\n//! | layer | modules | owns |\n//! |---|---|---|\n\
               //! | base | `wire` | frames |\n//! | top | `node` | nodes |\n\
               mod wire;\nmod node;\npub use node::Node;\n";
    let tree = |wire: &str| {
        vec![
            ("lib.rs".to_owned(), lib.to_owned()),
            ("wire.rs".to_owned(), wire.to_owned()),
            (
                "node.rs".to_owned(),
                "use crate::wire::Frame;\npub struct Node;\n".to_owned(),
            ),
        ]
    };
    assert!(check(&tree("pub struct Frame;\n")).is_empty());
    for upward in [
        "use crate::node::Node;\n",
        "use crate::{Node};\n",
        "use crate::{node::{self}};\n",
        "fn f() { let _ = crate::node::Node; }\n",
        "use super::Node;\n",
    ] {
        let problems = check(&tree(&format!("pub struct Frame;\n{upward}")));
        assert!(
            problems.iter().any(|p| p.contains("wire.rs") && p.contains("`node`")),
            "{upward:?}: {problems:?}"
        );
    }
    // Test code may reach up.
    let in_test = "pub struct Frame;\n#[cfg(test)]\nmod tests {\n    use crate::node::Node;\n}\n";
    assert!(check(&tree(in_test)).is_empty());
}

#[test]
fn a_cycle_between_files_is_reported() {
    let lib = "//! | layer | modules | owns |\n//! |---|---|---|\n//! | top | `node` | nodes |\nmod node;\n";
    let sources = vec![
        ("lib.rs".to_owned(), lib.to_owned()),
        (
            "node.rs".to_owned(),
            "mod a;\nmod b;\npub(crate) use b::Stats;\n".to_owned(),
        ),
        (
            "node/a.rs".to_owned(),
            "use super::Stats;\npub struct Parts;\n".to_owned(),
        ),
        (
            "node/b.rs".to_owned(),
            "use super::a::Parts;\npub struct Stats;\n".to_owned(),
        ),
    ];
    let problems = check(&sources);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("cycle") && p.contains("node/a.rs") && p.contains("node/b.rs")),
        "{problems:?}"
    );
}

fn read_tree(src: &Path) -> Vec<Source> {
    let mut sources = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().to_string_lossy().replace('\\', "/");
                sources.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    sources.sort();
    sources
}

/// Every problem found: imports against the layer order, modules missing
/// from the table, names that resolve to no module, cycles between files.
fn check(sources: &[Source]) -> Vec<String> {
    let files: BTreeMap<&str, &str> = sources.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    let lib = files.get("lib.rs").copied().unwrap_or_default();
    let layers = layer_table(lib);
    let mut problems = Vec::new();
    for module in declared_modules(lib) {
        if !layers.contains_key(&module) && module != "test_support" {
            problems.push(format!("lib.rs: module `{module}` is in no row of the layer table"));
        }
    }
    let tree = Tree { files: &files };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (&path, &text) in &files {
        if path == "lib.rs" || is_test_file(path) {
            continue;
        }
        let code = without_tests(&strip_comments_and_strings(text));
        let me = module_path(path);
        let top = me[0].clone();
        for (line, reference) in references(&code) {
            let Some(target) = tree.resolve(&me, &reference) else {
                problems.push(format!(
                    "{path}:{line}: `{}` names no module of the crate",
                    reference.join("::")
                ));
                continue;
            };
            if target != path {
                edges.entry(path.to_owned()).or_default().insert(target.clone());
            }
            let target_top = module_path(&target)[0].clone();
            if target == "lib.rs" || target_top == top {
                continue;
            }
            match (layers.get(&top), layers.get(&target_top)) {
                (Some(&mine), Some(&theirs)) if theirs > mine => problems.push(format!(
                    "{path}:{line}: module `{top}` (layer {}) imports `{target_top}` (layer {}), a layer above it",
                    mine + 1,
                    theirs + 1
                )),
                _ => {}
            }
        }
        // A module file depends on the children it declares.
        for child in declared_modules(&code) {
            if let Some(file) = tree.child_file(&me, &child) {
                edges.entry(path.to_owned()).or_default().insert(file);
            }
        }
    }
    for cycle in cycles(&edges) {
        problems.push(format!("import cycle between files: {}", cycle.join(" ↔ ")));
    }
    problems
}

/// Module name → its row in the "# Layers" table (0 is the first row).
fn layer_table(lib: &str) -> BTreeMap<String, usize> {
    let rows = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(str::trim)
        .filter(|l| l.starts_with('|'))
        .filter(|l| !l.starts_with("|---") && !l.starts_with("| layer"));
    let mut layers = BTreeMap::new();
    for (row, line) in rows.enumerate() {
        let modules = line.split('|').nth(2).unwrap_or_default();
        for name in modules.split('`').skip(1).step_by(2) {
            layers.insert(name.to_owned(), row);
        }
    }
    layers
}

/// The modules `mod name;` declares in `code`.
fn declared_modules(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub(crate) ")
                .or_else(|| l.strip_prefix("pub "))
                .unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
        })
        .collect()
}

fn is_test_file(path: &str) -> bool {
    path.ends_with("tests.rs") || path.contains("/tests/") || path == "test_support.rs"
}

/// `connection/link.rs` → `["connection", "link"]`.
fn module_path(path: &str) -> Vec<String> {
    let path = path.strip_suffix(".rs").unwrap_or(path);
    path.split('/').map(str::to_owned).collect()
}

/// Comments and the contents of string and char literals blanked, lines kept.
fn strip_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                if chars[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                } else if chars[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            // 'x'
            out.push_str("' '");
            i += 3;
        } else if c == '\'' && next == Some('\\') {
            // '\n', '\u{..}'
            while i + 1 < chars.len() && chars[i + 1] != '\'' {
                i += 1;
            }
            i += 2;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The code without `#[cfg(test)]` items (a block, or a line up to `;`).
fn without_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let end = match (item.find('{'), item.find(';')) {
            (Some(open), semi) if semi.is_none_or(|s| open < s) => matching_brace(item, open),
            (_, Some(semi)) => semi + 1,
            _ => item.len(),
        };
        // Keep the line count.
        out.extend(item[..end].chars().filter(|&c| c == '\n'));
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn matching_brace(text: &str, open: usize) -> usize {
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return open + i + 1;
                }
            }
            _ => {}
        }
    }
    text.len()
}

/// Every path that starts at `crate` or `super`, with its line: grouped
/// imports give one path per leaf (`crate::{a::B, c}` → `crate::a::B`,
/// `crate::c`).
fn references(code: &str) -> Vec<(usize, Vec<String>)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for head in ["crate", "super"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(head).map(|i| i + from) {
            from = at + head.len();
            let before = at.checked_sub(1).map(|i| bytes[i] as char);
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            if !code[from..].starts_with("::") {
                continue;
            }
            let line = code[..at].matches('\n').count() + 1;
            let (paths, _) = parse_tree(&code[from + 2..]);
            for mut path in paths {
                path.insert(0, head.to_owned());
                found.push((line, path));
            }
        }
    }
    found
}

/// Parses a use tree (`a::b::C`, `{a, b::{c, d}}`, `self`) at the start of
/// `text`: its leaf paths, and how much of `text` it took.
fn parse_tree(text: &str) -> (Vec<Vec<String>>, usize) {
    let text_trimmed = text.trim_start();
    let skipped = text.len() - text_trimmed.len();
    let text = text_trimmed;
    if let Some(inner) = text.strip_prefix('{') {
        let mut paths = Vec::new();
        let mut at = 1;
        let mut rest = inner;
        loop {
            let trimmed = rest.trim_start();
            at += rest.len() - trimmed.len();
            rest = trimmed;
            if let Some(after) = rest.strip_prefix('}') {
                return (paths, skipped + at + 1 + (rest.len() - after.len() - 1));
            }
            if let Some(after) = rest.strip_prefix(',') {
                at += 1;
                rest = after;
                continue;
            }
            let (sub, used) = parse_tree(rest);
            if used == 0 {
                return (paths, skipped + at);
            }
            paths.extend(sub);
            at += used;
            rest = &rest[used..];
        }
    }
    let ident_len = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    if ident_len == 0 {
        return (Vec::new(), 0);
    }
    let ident = text[..ident_len].to_owned();
    let rest = &text[ident_len..];
    if let Some(after) = rest.strip_prefix("::") {
        let (subs, used) = parse_tree(after);
        if used == 0 {
            return (vec![vec![ident]], skipped + ident_len);
        }
        let paths = subs
            .into_iter()
            .map(|mut p| {
                if p.first().is_some_and(|s| s == "self") {
                    p.remove(0);
                }
                p.insert(0, ident.clone());
                p
            })
            .collect();
        return (paths, skipped + ident_len + 2 + used);
    }
    (vec![vec![ident]], skipped + ident_len)
}

/// The crate's files, for resolving paths to the file that defines them.
struct Tree<'a> {
    files: &'a BTreeMap<&'a str, &'a str>,
}

impl Tree<'_> {
    /// The file of module `path` (`[]` is `lib.rs`).
    fn file_of(&self, path: &[String]) -> Option<String> {
        if path.is_empty() {
            return Some("lib.rs".to_owned());
        }
        let name = format!("{}.rs", path.join("/"));
        self.files.contains_key(name.as_str()).then_some(name)
    }

    fn child_file(&self, module: &[String], child: &str) -> Option<String> {
        let mut path = module.to_vec();
        path.push(child.to_owned());
        self.file_of(&path)
    }

    /// The file that defines what `reference` (from the file of module
    /// `me`) names; `None` if it names no module of the crate.
    fn resolve(&self, me: &[String], reference: &[String]) -> Option<String> {
        let (mut module, rest): (Vec<String>, &[String]) = match reference[0].as_str() {
            "crate" => (Vec::new(), &reference[1..]),
            _ => {
                let ups = reference.iter().take_while(|s| *s == "super").count();
                let base = me.len().checked_sub(ups)?;
                (me[..base].to_vec(), &reference[ups..])
            }
        };
        for segment in rest.iter().skip_while(|s| *s == "self") {
            if self.child_file(&module, segment).is_some() {
                module.push(segment.clone());
                continue;
            }
            // A name the module re-exports comes from the child it names.
            let file = self.file_of(&module)?;
            if let Some(from) = self.reexported_from(&file, segment) {
                return self.resolve(&module, &from);
            }
            return Some(file);
        }
        self.file_of(&module)
    }

    /// Where `file` re-exports `name` from (`pub use error::Error;` gives
    /// `["error", "Error"]`, relative to the file's module).
    fn reexported_from(&self, file: &str, name: &str) -> Option<Vec<String>> {
        let code = strip_comments_and_strings(self.files.get(file)?);
        for statement in code.split(';') {
            let statement = statement.trim();
            let Some(at) = statement.find("use ") else { continue };
            if !statement[..at].trim_start().starts_with("pub") {
                continue;
            }
            let (paths, _) = parse_tree(&statement[at + 4..]);
            for path in paths {
                if path.last().is_some_and(|last| last == name) && path.len() > 1 {
                    let mut path = path;
                    if path[0] == "self" {
                        path.remove(0);
                    }
                    if path[0] != "crate" && path[0] != "super" {
                        path.insert(0, "self".to_owned());
                    }
                    return Some(path);
                }
            }
        }
        None
    }
}

/// The strongly connected components of more than one file (Tarjan's).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Search<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Search<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut search = Search {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !search.index.contains_key(v.as_str()) {
            search.visit(v);
        }
    }
    search.found
}
