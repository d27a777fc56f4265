//! `Shadow`: the tree an extraction would make, modelled in memory and never written. It
//! takes every entry as `Tree` does (parents made as needed, nothing reached through a
//! symlink or a non-directory, what is in the way replaced, a non-empty directory never),
//! and resolves symlinks through the same `links::resolve`, so a verify refuses exactly what
//! a restore would, naming the same entry, without a byte on disk.

use std::collections::BTreeMap;

use rustix::io::Errno;

use super::UntarError;
use super::dirs::DirError;
use super::entry::{Kind, Name};
use super::links::{Leads, View, What, resolve};
use super::target::{Discard, Target};
use super::tree::{
    Attrs, Links, Options, dir_err, escaping, link_through, link_to_escaping, not_extracted,
};

/// What a name in the modelled tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Symlink(Vec<u8>),
    /// A fifo or device node.
    Special,
}

/// How far a path's directories reach in a [`Shadow`].
enum Reach<'r> {
    Whole,
    /// The index of the first missing component.
    Missing(usize),
    /// A component that is there but not a directory: its path and its name.
    Blocked {
        at: Vec<u8>,
        part: &'r [u8],
    },
}

/// A tree of names only: what `Tree` would hold after the same entries.
#[derive(Debug)]
pub(crate) struct Shadow {
    /// Every name under the root by cleaned path (the root, `""`, is implied).
    nodes: BTreeMap<Vec<u8>, Node>,
    options: Options,
    /// Directories made by an entry, checked again at the end.
    dirs: Vec<Vec<u8>>,
    /// Symlinks made under `RefuseEscaping`, resolved again at the end.
    symlinks: Vec<Vec<u8>>,
}

fn join(parent: &[u8], base: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return base.to_vec();
    }
    let mut path = parent.to_vec();
    path.push(b'/');
    path.extend_from_slice(base);
    path
}

impl Shadow {
    pub fn new(options: Options) -> Shadow {
        Shadow {
            nodes: BTreeMap::new(),
            options,
            dirs: Vec::new(),
            symlinks: Vec::new(),
        }
    }

    /// How far the directories of `rel` reach: every component a directory, the first
    /// missing one (all after it are missing too: nothing is made without its parents), or
    /// the first that is not a directory.
    fn reach<'r>(&self, rel: &'r [u8]) -> Reach<'r> {
        let mut at = Vec::with_capacity(rel.len());
        if rel.is_empty() {
            return Reach::Whole;
        }
        for (i, part) in rel.split(|b| *b == b'/').enumerate() {
            at = join(&at, part);
            match self.nodes.get(&at) {
                None => return Reach::Missing(i),
                Some(Node::Dir) => {}
                Some(_) => return Reach::Blocked { at, part },
            }
        }
        Reach::Whole
    }

    /// As `Dirs::get`: the directory at `rel`, missing ones made.
    fn get(&mut self, rel: &[u8]) -> Result<(), DirError> {
        match self.reach(rel) {
            Reach::Whole => Ok(()),
            Reach::Blocked { at, .. } => Err(DirError::NotADir(at)),
            Reach::Missing(from) => {
                let parts: Vec<&[u8]> = rel.split(|b| *b == b'/').collect();
                for i in from..parts.len() {
                    self.nodes.insert(parts[..=i].join(&b'/'), Node::Dir);
                }
                Ok(())
            }
        }
    }

    /// As `Dirs::open_existing`: the directory at `rel`, made by nothing.
    fn existing(&self, rel: &[u8]) -> Result<(), DirError> {
        match self.reach(rel) {
            Reach::Whole => Ok(()),
            Reach::Missing(_) => Err(DirError::Io(Errno::NOENT)),
            Reach::Blocked { part, .. } => Err(DirError::NotADir(part.to_vec())),
        }
    }

    /// As `dirs::remove_existing`: whatever is at `rel`, a directory only when empty.
    fn remove(&mut self, rel: &[u8]) -> Result<(), Errno> {
        if self.nodes.get(rel) == Some(&Node::Dir) {
            let mut under = rel.to_vec();
            under.push(b'/');
            let children = self
                .nodes
                .range(under.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&under));
            if children {
                return Err(Errno::NOTEMPTY);
            }
        }
        self.nodes.remove(rel);
        Ok(())
    }

    /// Puts `node` at `name` (its parent made), replacing what is there.
    fn put(&mut self, name: &Name, node: Node, op: &'static str) -> Result<(), UntarError> {
        self.get(name.split().0).map_err(|e| dir_err(name, e))?;
        self.remove(&name.rel)
            .map_err(|e| UntarError::write(op, &name.rel, e))?;
        self.nodes.insert(name.rel.clone(), node);
        Ok(())
    }

    fn leads(&self, dir: &[u8], target: &[u8]) -> Leads {
        resolve(self, dir, target, self.options.link_root_depth)
            .expect("a modelled tree has no I/O to fail")
    }
}

impl View for Shadow {
    type Dir = Vec<u8>;

    fn enter(&self, parent: Option<&Vec<u8>>, name: &[u8]) -> Result<Option<Vec<u8>>, Errno> {
        let path = join(parent.map_or(&[][..], Vec::as_slice), name);
        Ok((self.nodes.get(&path) == Some(&Node::Dir)).then_some(path))
    }

    fn what(&self, parent: Option<&Vec<u8>>, name: &[u8]) -> Result<What, Errno> {
        let path = join(parent.map_or(&[][..], Vec::as_slice), name);
        Ok(match self.nodes.get(&path) {
            Some(Node::Dir) => What::Dir,
            Some(Node::Symlink(target)) => What::Symlink(target.clone()),
            _ => What::Other,
        })
    }
}

impl Target for Shadow {
    type File = Discard;

    fn dir(&mut self, name: &Name, _: Attrs) -> Result<(), UntarError> {
        if !name.is_root() && self.nodes.get(&name.rel) != Some(&Node::Dir) {
            self.put(name, Node::Dir, "replace")?;
        }
        self.dirs.push(name.rel.clone());
        Ok(())
    }

    fn file(&mut self, name: &Name) -> Result<Discard, UntarError> {
        self.put(name, Node::File, "create")?;
        Ok(Discard)
    }

    fn set_file_attrs(&self, _: &Discard, _: &[u8], _: &Attrs) -> Result<(), UntarError> {
        Ok(())
    }

    fn symlink(&mut self, name: &Name, target: &[u8], _: &Attrs) -> Result<(), UntarError> {
        let refuse = self.options.links == Links::RefuseEscaping;
        if refuse {
            escaping(name, target, self.leads(name.split().0, target))?;
        }
        self.put(name, Node::Symlink(target.to_vec()), "create symlink")?;
        if refuse {
            self.symlinks.push(name.rel.clone());
        }
        Ok(())
    }

    fn hard_link(&mut self, name: &Name, to: &Name) -> Result<(), UntarError> {
        let (to_parent, _) = to.split();
        self.existing(to_parent).map_err(|e| match e {
            DirError::NotADir(through) => link_through(name, &through),
            DirError::Io(_) => not_extracted(name, to),
        })?;
        let node = match self.nodes.get(&to.rel) {
            None => return Err(not_extracted(name, to)),
            Some(Node::Dir) => {
                return Err(UntarError::refused(
                    &name.raw,
                    "is a hard link to a directory",
                ));
            }
            Some(node) => node.clone(),
        };
        if let Node::Symlink(target) = &node {
            for dir in [to_parent, name.split().0] {
                if self.leads(dir, target) != Leads::Inside {
                    return Err(link_to_escaping(name, to));
                }
            }
            if self.options.links == Links::RefuseEscaping {
                self.symlinks.push(name.rel.clone());
            }
        }
        self.put(name, node, "create hard link")
    }

    fn node(&mut self, name: &Name, _: &Kind, _: &Attrs) -> Result<(), UntarError> {
        self.put(name, Node::Special, "create node")
    }

    fn remove_file(&mut self, rel: &[u8]) -> Result<(), UntarError> {
        let name = Name::parse(rel).expect("a clean name");
        match self.existing(name.split().0) {
            Ok(()) => {}
            Err(DirError::Io(_)) => return Ok(()),
            Err(e) => return Err(dir_err(&name, e)),
        }
        match self.nodes.get(rel) {
            Some(Node::Dir) => Err(UntarError::write("remove", rel, Errno::ISDIR)),
            _ => {
                self.nodes.remove(rel);
                Ok(())
            }
        }
    }

    fn finish(mut self) -> Result<(), UntarError> {
        for rel in std::mem::take(&mut self.symlinks) {
            let name = Name::parse(&rel).expect("a clean name");
            let (parent, _) = name.split();
            if self.existing(parent).is_err() {
                continue; // replaced by something else since
            }
            if let Some(Node::Symlink(target)) = self.nodes.get(&rel) {
                escaping(&name, target, self.leads(parent, target))?;
            }
        }
        for rel in self.dirs.iter().rev() {
            self.existing(rel)
                .map_err(|e| dir_err(&Name::parse(rel).expect("a clean name"), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tarsafe::tree::tests::attrs;
    use crate::tarsafe::{Tree, shown};

    /// One entry of a scripted extraction.
    enum Op {
        Dir(&'static str),
        File(&'static str),
        Symlink(&'static str, &'static str),
        HardLink(&'static str, &'static str),
        Fifo(&'static str),
    }

    /// How a script ended, as a restore tells it: done, refused (the message), or a write
    /// that failed (its op and errno).
    fn run<T: Target>(mut t: T, script: &[Op]) -> String {
        let n = |raw: &str| Name::parse(raw.as_bytes()).unwrap();
        for op in script {
            let done = match op {
                Op::Dir(p) => t.dir(&n(p), attrs()),
                Op::File(p) => t.file(&n(p)).map(drop),
                Op::Symlink(p, to) => t.symlink(&n(p), to.as_bytes(), &attrs()),
                Op::HardLink(p, to) => t.hard_link(&n(p), &n(to)),
                Op::Fifo(p) => t.node(&n(p), &Kind::Fifo, &attrs()),
            };
            if let Err(e) = done {
                return shown_err(e);
            }
        }
        t.finish().map_or_else(shown_err, |()| "done".to_owned())
    }

    fn shown_err(e: UntarError) -> String {
        match e {
            UntarError::Refused { entry, why } => format!("refused {}: {why}", shown(&entry)),
            UntarError::Write { op, source, .. } => format!("write {op}: {:?}", source.kind()),
            UntarError::Read(e) => format!("read {e}"),
        }
    }

    /// The model decides as the tree on disk does, script by script.
    #[test]
    fn the_model_ends_every_script_as_the_tree_on_disk_does() {
        use Op::*;
        let scripts: Vec<Vec<Op>> = vec![
            vec![
                Dir("a"),
                File("a/x"),
                Symlink("a/l", "x"),
                HardLink("h", "a/x"),
            ],
            vec![Dir("a"), File("a/x"), File("a")],
            vec![Dir("a"), File("a")],
            vec![Symlink("l", "d"), Dir("d"), File("l/x")],
            vec![File("f"), File("f/x")],
            vec![File("f"), HardLink("h", "f/x")],
            vec![Symlink("l", "/etc"), HardLink("h", "l/passwd")],
            vec![HardLink("h", "missing")],
            vec![Dir("d"), HardLink("h", "d")],
            vec![Symlink("out", "../x"), HardLink("h", "out")],
            vec![Symlink("p", "."), Symlink("esc", "p/p/../..")],
            vec![Symlink("later", "a/../b"), Dir("a"), Fifo("b")],
            vec![Fifo("x"), Dir("x"), File("x/y")],
            vec![Symlink("loop1", "loop2"), Symlink("loop2", "loop1")],
            vec![Dir("a"), Symlink("a", "b")],
        ];
        for links in [Links::AsArchived, Links::RefuseEscaping] {
            let options = Options {
                owners: false,
                links,
                link_root_depth: 0,
            };
            for (i, script) in scripts.iter().enumerate() {
                let dir = tempfile::tempdir().unwrap();
                let on_disk = run(Tree::open(dir.path(), options).unwrap(), script);
                let modelled = run(Shadow::new(options), script);
                assert_eq!(modelled, on_disk, "script {i} under {links:?}");
            }
        }
    }
}
