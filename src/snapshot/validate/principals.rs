//! Principals and group membership: ids, `memberOf` references and cycles.

use super::fields::Declared;
use super::{Named, Problems};
use crate::model::{check_principal_id, principal_key, Principal, PrincipalType};
use crate::snapshot::schema::SnapshotFile;

/// Principal look-up by id (GUIDs case-insensitively, other ids exactly).
pub(super) struct PrincipalIndex {
    by_key: Declared<String, usize>,
}

impl PrincipalIndex {
    pub fn resolve(&self, id: &str) -> Option<usize> {
        self.by_key.get(principal_key(id).as_ref()).copied()
    }
}

pub(super) fn principals(
    file: &SnapshotFile,
    problems: &mut Problems,
) -> (Vec<Principal>, PrincipalIndex) {
    let mut by_key = Declared::with_capacity(file.principals.len());
    for (i, p) in file.principals.iter().enumerate() {
        let path = format!("principals[{i}].id");
        if let Err(e) = check_principal_id(&p.id) {
            problems.push(&path, Some(&p.id), format!("id {e}"));
        }
        by_key.declare_id(
            principal_key(&p.id).into_owned(),
            i,
            "principal",
            &p.id,
            path,
            problems,
        );
    }
    let index = PrincipalIndex { by_key };
    let mut out = Vec::with_capacity(file.principals.len());
    for (i, p) in file.principals.iter().enumerate() {
        let mut member_of = Vec::with_capacity(p.member_of.len());
        for (g, group) in p.member_of.iter().enumerate() {
            let path = format!("principals[{i}].memberOf[{g}]");
            match index.resolve(group) {
                None => problems.push_unknown(
                    Named::Principal,
                    group,
                    path,
                    Some(&p.id),
                    format!("unknown group '{group}'"),
                ),
                Some(gi) if file.principals[gi].kind != PrincipalType::Group => problems.push(
                    path,
                    Some(&p.id),
                    format!("'{group}' is a {}, not a Group", file.principals[gi].kind),
                ),
                Some(gi) => member_of.push(gi),
            }
        }
        out.push(Principal {
            id: p.id.clone(),
            kind: p.kind,
            display_name: p.display_name.clone(),
            member_of,
            attributes: p.attributes.clone(),
        });
    }
    for cycle in membership_cycles(&out) {
        let names: Vec<&str> = cycle.iter().map(|&i| out[i].id.as_str()).collect();
        let first = cycle[0];
        problems.push(
            format!("principals[{first}].memberOf"),
            Some(&out[first].id),
            format!(
                "group membership forms a cycle: {} -> {}",
                names.join(" -> "),
                names[0]
            ),
        );
    }
    (out, index)
}

/// Every membership cycle, each reported once (by iterative DFS colouring).
fn membership_cycles(principals: &[Principal]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    let mut colour = vec![Colour::White; principals.len()];
    let mut cycles = Vec::new();
    for start in 0..principals.len() {
        if colour[start] != Colour::White {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        colour[start] = Colour::Grey;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&group) = principals[node].member_of.get(*next) {
                *next += 1;
                match colour[group] {
                    Colour::White => {
                        colour[group] = Colour::Grey;
                        stack.push((group, 0));
                    }
                    Colour::Grey => {
                        let from = stack.iter().position(|&(n, _)| n == group).unwrap_or(0);
                        cycles.push(stack[from..].iter().map(|&(n, _)| n).collect());
                    }
                    Colour::Black => {}
                }
            } else {
                colour[node] = Colour::Black;
                stack.pop();
            }
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::super::testing::assert_problems;

    #[test]
    fn principal_ids_must_be_valid() {
        assert_problems(
            "principals: [{ id: \"a b\", type: User }]\n",
            &[(
                "principals[0].id",
                Some("a b"),
                "id contains whitespace or a control character at byte 1",
            )],
        );
    }

    #[test]
    fn principal_ids_are_unique() {
        assert_problems(
            "principals:\n  - { id: 0B5F6A1E-0000-4000-8000-00000000000A, type: User }\n  - { id: 0b5f6a1e-0000-4000-8000-00000000000a, type: User }\n",
            &[("principals[1].id", Some("0b5f6a1e-0000-4000-8000-00000000000a"), "duplicate principal id '0b5f6a1e-0000-4000-8000-00000000000a'")],
        );
    }

    #[test]
    fn member_of_names_a_known_principal() {
        assert_problems(
            "principals: [{ id: alice, type: User, memberOf: [nobody] }]\n",
            &[(
                "principals[0].memberOf[0]",
                Some("alice"),
                "unknown group 'nobody'",
            )],
        );
    }

    #[test]
    fn member_of_names_a_group() {
        assert_problems(
            "principals:\n  - { id: alice, type: User, memberOf: [bob] }\n  - { id: bob, type: User }\n",
            &[("principals[0].memberOf[0]", Some("alice"), "'bob' is a User, not a Group")],
        );
    }

    #[test]
    fn group_membership_may_not_cycle() {
        assert_problems(
            "principals:\n  - { id: g1, type: Group, memberOf: [g2] }\n  - { id: g2, type: Group, memberOf: [g1] }\n  - { id: g3, type: Group, memberOf: [g3] }\n",
            &[
                ("principals[0].memberOf", Some("g1"), "group membership forms a cycle: g1 -> g2 -> g1"),
                ("principals[2].memberOf", Some("g3"), "group membership forms a cycle: g3 -> g3"),
            ],
        );
    }
}
