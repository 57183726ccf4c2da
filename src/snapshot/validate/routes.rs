//! Routes of the ext_authz front door: compiled here, so a snapshot with a
//! bad route is refused (and a reload keeps the last good one) like any
//! other problem, each reported at `routes[i].field`.

use super::Problems;
use crate::extauthz::{RouteSpec, RouteTable};

/// The compiled table, or an empty one when a route has a problem (the
/// snapshot is refused then anyway).
pub(super) fn routes(entries: &[RouteSpec], problems: &mut Problems) -> RouteTable {
    match RouteTable::compile(entries) {
        Ok(table) => table,
        Err(error) => {
            for issue in error.issues {
                let id = entries.get(issue.index).map(|r| r.path.as_str());
                problems.push(
                    format!("routes[{}].{}", issue.index, issue.field),
                    id,
                    issue.message,
                );
            }
            RouteTable::empty()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_problems, valid_snapshot};

    const SITE: &str = "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{}";

    #[test]
    fn valid_routes_are_compiled_into_the_snapshot() {
        let yaml = format!(
            "routes:\n  - {{ method: POST, path: '{SITE}/config/appsettings/list', operation: Microsoft.Web/sites/config/list/action }}\n  - {{ method: GET, path: /apis/orders, operation: Contoso.Api/orders/read, dataAction: true, scope: /subscriptions/s1 }}\n"
        );
        assert_eq!(valid_snapshot(&yaml).routes.len(), 2);
    }

    #[test]
    fn a_bad_method_is_reported_at_its_path() {
        let yaml = format!(
            "routes:\n  - {{ method: FETCH, path: '{SITE}', operation: Microsoft.Web/sites/read }}\n"
        );
        let problems = super::super::testing::check(&yaml)
            .err()
            .unwrap_or_default();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].path, "routes[0].method");
        assert_eq!(problems[0].id.as_deref(), Some(SITE));
    }

    #[test]
    fn a_bad_operation_is_reported_at_its_path() {
        let yaml = format!("routes:\n  - {{ method: GET, path: '{SITE}', operation: '' }}\n");
        let problems = super::super::testing::check(&yaml)
            .err()
            .unwrap_or_default();
        assert_eq!(
            problems.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
            ["routes[0].operation"],
            "{problems:#?}"
        );
    }

    #[test]
    fn a_route_declared_twice_is_reported_on_the_second() {
        assert_problems(
            &format!("routes:\n  - {{ method: GET, path: '{SITE}', operation: Microsoft.Web/sites/read }}\n  - {{ method: GET, path: '{}', operation: Microsoft.Web/sites/read }}\n", SITE.to_uppercase()),
            &[(
                "routes[1].path",
                Some(SITE.to_uppercase().as_str()),
                "has the same method and path as routes[0]; remove one",
            )],
        );
    }

    #[test]
    fn route_problems_come_with_the_others_in_file_order() {
        let yaml = format!(
            "routes:\n  - {{ method: GET, path: '{SITE}', operation: Microsoft.Web/sites/read }}\n  - {{ method: GET, path: '{SITE}', operation: Microsoft.Web/sites/read }}\nprincipals: [{{ id: alice, type: User, memberOf: [nobody] }}]\n"
        );
        let problems = super::super::testing::check(&yaml)
            .err()
            .unwrap_or_default();
        assert_eq!(
            problems.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
            ["routes[1].path", "principals[0].memberOf[0]"]
        );
    }

    #[test]
    fn an_unknown_route_key_is_refused_by_the_schema() {
        let yaml = format!("routes:\n  - {{ method: GET, path: '{SITE}', operation: x/y/read, dataActions: true }}\n");
        assert!(serde_yaml::from_str::<crate::snapshot::schema::SnapshotFile>(&yaml).is_err());
    }
}
