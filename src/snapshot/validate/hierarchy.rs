//! Management groups and subscriptions: the tree that completes a scope's
//! ancestry above its subscription.

use super::fields::Declared;
use super::{Named, Problems};
use crate::model::{Hierarchy, ManagementGroup, Scope, ScopeKind, Subscription};
use crate::snapshot::schema::SnapshotFile;

pub(super) fn hierarchy(file: &SnapshotFile, problems: &mut Problems) -> Hierarchy {
    let mut mg_index: Declared<String, usize> =
        Declared::with_capacity(file.management_groups.len());
    for (i, mg) in file.management_groups.iter().enumerate() {
        let path = format!("managementGroups[{i}].id");
        if mg.id.is_empty() || mg.id.contains(['/', ' ']) || mg.id.chars().any(char::is_control) {
            problems.push(
                &path,
                Some(&mg.id),
                "a management group id must be non-empty without '/', spaces or control characters",
            );
        }
        mg_index.declare_id(
            mg.id.to_ascii_lowercase(),
            i,
            "management group",
            &mg.id,
            path,
            problems,
        );
    }
    let mut groups = Vec::with_capacity(file.management_groups.len());
    for (i, mg) in file.management_groups.iter().enumerate() {
        let parent = mg.parent.as_ref().and_then(|p| {
            let found = mg_index.get(&p.to_ascii_lowercase()).copied();
            if found.is_none() {
                problems.push_unknown(
                    Named::ManagementGroup,
                    p,
                    format!("managementGroups[{i}].parent"),
                    Some(&mg.id),
                    format!("unknown parent management group '{p}'"),
                );
            }
            found
        });
        groups.push(ManagementGroup {
            id: mg.id.clone(),
            parent,
            display_name: mg.display_name.clone(),
        });
    }
    report_cycles(&groups, problems);
    let subscriptions = subscriptions(file, &mg_index, problems);
    Hierarchy::new(groups, subscriptions)
}

/// The subscriptions, each hung on its management group.
fn subscriptions(
    file: &SnapshotFile,
    mg_index: &Declared<String, usize>,
    problems: &mut Problems,
) -> Vec<Subscription> {
    let mut subs = Vec::with_capacity(file.subscriptions.len());
    let mut sub_ids: Declared = Declared::with_capacity(file.subscriptions.len());
    for (i, s) in file.subscriptions.iter().enumerate() {
        let path = format!("subscriptions[{i}]");
        if Scope::parse(&format!("/subscriptions/{}", s.id)).map(|sc| sc.kind())
            != Ok(ScopeKind::Subscription)
        {
            problems.push(
                format!("{path}.id"),
                Some(&s.id),
                "a subscription id must be a single non-empty segment",
            );
        }
        sub_ids.declare_id(
            s.id.to_ascii_lowercase(),
            (),
            "subscription",
            &s.id,
            format!("{path}.id"),
            problems,
        );
        let management_group = s.management_group.as_ref().and_then(|m| {
            let found = mg_index.get(&m.to_ascii_lowercase()).copied();
            if found.is_none() {
                problems.push_unknown(
                    Named::ManagementGroup,
                    m,
                    format!("{path}.managementGroup"),
                    Some(&s.id),
                    format!("unknown management group '{m}'"),
                );
            }
            found
        });
        subs.push(Subscription {
            id: s.id.clone(),
            management_group,
            display_name: s.display_name.clone(),
        });
    }
    subs
}

/// Follows each group's parents; more steps than groups means a loop.
fn report_cycles(groups: &[ManagementGroup], problems: &mut Problems) {
    for (i, mg) in groups.iter().enumerate() {
        let mut next = mg.parent;
        let mut steps = 0;
        while let Some(p) = next {
            if p == i || steps > groups.len() {
                problems.push(
                    format!("managementGroups[{i}].parent"),
                    Some(&mg.id),
                    "management group parents form a cycle",
                );
                break;
            }
            steps += 1;
            next = groups[p].parent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_problems, valid};

    #[test]
    fn management_group_ids_are_single_segments() {
        assert_problems(
            "managementGroups: [{ id: \"a/b\" }]\n",
            &[(
                "managementGroups[0].id",
                Some("a/b"),
                "a management group id must be non-empty without '/', spaces or control characters",
            )],
        );
    }

    #[test]
    fn management_group_ids_are_unique() {
        assert_problems(
            "managementGroups: [{ id: a }, { id: A }]\n",
            &[(
                "managementGroups[1].id",
                Some("A"),
                "duplicate management group id 'A'",
            )],
        );
    }

    #[test]
    fn management_group_parent_must_exist() {
        assert_problems(
            "managementGroups: [{ id: a, parent: b }]\n",
            &[(
                "managementGroups[0].parent",
                Some("a"),
                "unknown parent management group 'b'",
            )],
        );
    }

    #[test]
    fn management_group_parents_may_not_cycle() {
        assert_problems(
            "managementGroups:\n  - { id: a, parent: b }\n  - { id: b, parent: a }\n",
            &[
                (
                    "managementGroups[0].parent",
                    Some("a"),
                    "management group parents form a cycle",
                ),
                (
                    "managementGroups[1].parent",
                    Some("b"),
                    "management group parents form a cycle",
                ),
            ],
        );
    }

    #[test]
    fn subscription_ids_are_single_segments() {
        assert_problems(
            "subscriptions: [{ id: \"a/b\" }]\n",
            &[(
                "subscriptions[0].id",
                Some("a/b"),
                "a subscription id must be a single non-empty segment",
            )],
        );
    }

    #[test]
    fn subscription_ids_are_unique() {
        assert_problems(
            "subscriptions: [{ id: s1 }, { id: S1 }]\n",
            &[(
                "subscriptions[1].id",
                Some("S1"),
                "duplicate subscription id 'S1'",
            )],
        );
    }

    #[test]
    fn subscription_management_group_must_exist() {
        assert_problems(
            "subscriptions: [{ id: s1, managementGroup: mg }]\n",
            &[(
                "subscriptions[0].managementGroup",
                Some("s1"),
                "unknown management group 'mg'",
            )],
        );
    }

    #[test]
    fn a_valid_hierarchy_links_subscriptions_to_groups() {
        let t = valid("managementGroups: [{ id: root }, { id: mg, parent: ROOT }]\nsubscriptions: [{ id: s1, managementGroup: mg }]\n");
        assert_eq!(t.hierarchy.management_groups[1].parent, Some(0));
        assert_eq!(t.hierarchy.subscriptions[0].management_group, Some(1));
    }
}
