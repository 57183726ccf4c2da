//! Typed positions into the compiled snapshot's tables.
//!
//! The compiled snapshot is a web of `u32` positions: a principal's
//! assignments, an assignment's scope node, a deny's principals. Giving
//! each kind its own type means a principal's position cannot index the
//! deny assignments, and the casts to `usize` live here only. Positions
//! are `u32` to keep the tables half the size of `usize` ones; a snapshot
//! is bounded far below 2³² entries of any kind by its file size limit.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Index;

use crate::model::{
    AccessKey, Agent, DenyAssignment, Principal, Resource, RoleAssignment, RoleDefinition,
};

/// A position in one of the snapshot's tables.
pub trait Position: Copy {
    /// The position of the `n`th entry. Snapshots hold far fewer than 2³²
    /// entries of any kind (see [`super::MAX_SNAPSHOT_BYTES`]).
    fn at(n: usize) -> Self;
    /// The entry's offset in its table.
    fn get(self) -> usize;
}

macro_rules! positions {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u32);

        impl Position for $name {
            #[inline]
            fn at(n: usize) -> $name {
                debug_assert!(n <= u32::MAX as usize, "snapshot tables are bounded by the file size");
                $name(n as u32)
            }

            #[inline]
            fn get(self) -> usize {
                self.0 as usize
            }
        }

        /// For cache keys that pack several positions into one integer.
        impl From<$name> for u64 {
            #[inline]
            fn from(position: $name) -> u64 {
                u64::from(position.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    )*};
}

positions! {
    /// An interned scope (`CompiledSnapshot::nodes`); the root `/` is
    /// [`ROOT_NODE`].
    NodeId;
    /// A principal (`Tenant::principals`).
    PrincipalIx;
    /// A role assignment (`Tenant::role_assignments`).
    AssignmentIx;
    /// A deny assignment (`Tenant::deny_assignments`).
    DenyIx;
    /// An agent (`Tenant::agents`).
    AgentIx;
    /// An access key (`Tenant::access_keys`).
    AccessKeyIx;
    /// A declared resource (`Tenant::resources`).
    ResourceIx;
    /// A role definition (`Tenant::role_definitions`).
    RoleIx;
}

/// The root scope `/`, always interned first.
pub const ROOT_NODE: NodeId = NodeId(0);

/// A table read by one kind of position.
pub struct Table<I, T> {
    items: Box<[T]>,
    by: PhantomData<fn(I) -> T>,
}

impl<I: Position, T> Table<I, T> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, position: I) -> Option<&T> {
        self.items.get(position.get())
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    /// Each entry with its position.
    pub fn positions(&self) -> impl Iterator<Item = (I, &T)> + '_ {
        self.items.iter().enumerate().map(|(n, t)| (I::at(n), t))
    }
}

impl<I: Position, T> Index<I> for Table<I, T> {
    type Output = T;

    #[inline]
    fn index(&self, position: I) -> &T {
        &self.items[position.get()]
    }
}

impl<I, T> From<Vec<T>> for Table<I, T> {
    fn from(items: Vec<T>) -> Table<I, T> {
        Table {
            items: items.into_boxed_slice(),
            by: PhantomData,
        }
    }
}

impl<I, T> FromIterator<T> for Table<I, T> {
    fn from_iter<It: IntoIterator<Item = T>>(iter: It) -> Table<I, T> {
        Table {
            items: iter.into_iter().collect(),
            by: PhantomData,
        }
    }
}

impl<I, T: fmt::Debug> fmt::Debug for Table<I, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.items.iter()).finish()
    }
}

/// The tenant's own vectors, read by the positions the compiled snapshot
/// holds for them.
macro_rules! tenant_tables {
    ($($position:ident => $item:ty;)*) => {$(
        impl Index<$position> for Vec<$item> {
            type Output = $item;

            #[inline]
            fn index(&self, position: $position) -> &$item {
                &self[position.get()]
            }
        }
    )*};
}

tenant_tables! {
    PrincipalIx => Principal;
    AssignmentIx => RoleAssignment;
    DenyIx => DenyAssignment;
    AgentIx => Agent;
    AccessKeyIx => AccessKey;
    ResourceIx => Resource;
    RoleIx => RoleDefinition;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_read_by_its_own_kind_of_position() {
        let table: Table<PrincipalIx, &str> = vec!["alice", "bob"].into();
        assert_eq!(table[PrincipalIx::at(1)], "bob");
        assert_eq!(table.get(PrincipalIx::at(2)), None);
        let listed: Vec<_> = table.positions().map(|(p, n)| (p.get(), *n)).collect();
        assert_eq!(listed, [(0, "alice"), (1, "bob")]);
    }

    #[test]
    fn positions_print_their_kind() {
        assert_eq!(format!("{:?}", AssignmentIx::at(7)), "AssignmentIx(7)");
        assert_eq!(ROOT_NODE.get(), 0);
    }
}
