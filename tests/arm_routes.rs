//! Replays real Azure Resource Manager routes, each with the operation that
//! authorizes it, through the request mapping. The routes come from
//! `shared/arm-routes` beside the checkout (override with `RAMPART_ARM_ROUTES`); the test
//! skips, saying so, where that file is absent (a user's fresh clone).
//!
//! Each route template is filled in: `{subscriptionId}` with a GUID, a
//! leading whole-scope parameter (`/{scope}/providers/…`) with a scope of
//! one of four kinds in turn (so extension resources are seen at every
//! level), and every other parameter with a name.
//!
//! Also here, because it needs its own global allocator: the mapping does
//! not allocate once its operation buffer has grown.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::PathBuf;

use rampart::extauthz::{map_request, Method, RouteSpec, RouteTable};
use rampart::model::Scope;

const SUBSCRIPTION: &str = "00000000-0000-4000-8000-000000000001";

/// `RAMPART_ARM_ROUTES`, else `shared/arm-routes` beside the checkout (or
/// beside the directory of worktrees).
fn routes_file() -> Option<PathBuf> {
    if let Some(file) = std::env::var_os("RAMPART_ARM_ROUTES") {
        return Some(PathBuf::from(file));
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    ["../shared", "../../shared"]
        .into_iter()
        .map(|dir| here.join(dir).join("arm-routes/routes.jsonl"))
        .find(|file| file.exists())
}

/// Scopes a leading `{scope}`-like parameter stands for, without the
/// leading `/` (the template supplies it).
fn whole_scope(turn: usize) -> String {
    let kinds = [
        format!("subscriptions/{SUBSCRIPTION}"),
        format!("subscriptions/{SUBSCRIPTION}/resourceGroups/rg-app"),
        format!(
            "subscriptions/{SUBSCRIPTION}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-1"
        ),
        "providers/Microsoft.Management/managementGroups/mg-platform".to_owned(),
    ];
    kinds[turn % kinds.len()].clone()
}

/// Fills a route template's parameters.
fn fill(template: &str, turn: usize) -> String {
    let mut out = String::new();
    for (i, segment) in template.split('/').enumerate().skip(1) {
        out.push('/');
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(_) if i == 1 && template.matches('/').count() > 1 => {
                out.push_str(&whole_scope(turn))
            }
            Some(p) if p.eq_ignore_ascii_case("subscriptionId") => out.push_str(SUBSCRIPTION),
            Some(p) => {
                out.push_str("n-");
                out.push_str(p);
            }
            None => out.push_str(segment),
        }
    }
    out
}

/// Where the data set pairs a route with an operation Azure does not use
/// for it, and the mapping answers what Azure does: (the data set's
/// operation prefix, the right one, why). The data set's pairing is an
/// automated heuristic; each entry here is checked against Azure's
/// published operations and built-in roles.
const ERRATA: &[(&str, &str, &str)] = &[
    (
        "Microsoft.DBforMySQL/servers/",
        "Microsoft.DBforMySQL/flexibleServers/",
        "flexible servers have their own operations (flexibleServers/restart/action…); \
         the data set borrows single-server names for restart, start and stop, yet maps \
         the same servers' failover or backupAndExport to flexibleServers operations",
    ),
    (
        "Microsoft.DBforPostgreSQL/servers/",
        "Microsoft.DBforPostgreSQL/flexibleServers/",
        "as for MySQL; the data set itself maps PostgreSQL flexibleServers/start and stop \
         to flexibleServers operations",
    ),
    (
        "Microsoft.Migrate/projects/",
        "Microsoft.Migrate/assessmentProjects/",
        "Azure registers assessmentProjects/read, write and delete for this type",
    ),
    (
        "Microsoft.LabServices/labs/",
        "Microsoft.LabServices/labaccounts/labs/",
        "labs under a lab account are labAccounts/labs/write; labs/write is the newer \
         lab-plan model's top-level type",
    ),
    (
        "Microsoft.DocumentDB/databaseAccounts/readonlykeys/read",
        "Microsoft.DocumentDB/databaseAccounts/readonlykeys/action",
        "POST readonlykeys needs readonlykeys/action: Reader (*/read) cannot fetch keys, \
         which is why Cosmos DB Account Reader grants readonlykeys/action",
    ),
];

/// The erratum explaining why `got` is right where the data set wanted
/// `wanted`, if there is one.
fn erratum(wanted: &str, got: &str) -> Option<&'static str> {
    ERRATA.iter().find_map(|&(theirs, ours, why)| {
        let rest = wanted
            .get(..theirs.len())
            .filter(|p| p.eq_ignore_ascii_case(theirs))
            .map(|_| &wanted[theirs.len()..])?;
        let right = format!("{ours}{rest}");
        right.eq_ignore_ascii_case(got).then_some(why)
    })
}

#[test]
fn real_arm_routes_map_to_the_operation_that_authorizes_them() {
    let Some(file) = routes_file() else {
        eprintln!(
            "skipped: shared/arm-routes is not here (it exists only in the workspace and CI)"
        );
        return;
    };
    let text = std::fs::read_to_string(&file).expect("routes.jsonl");
    let table = RouteTable::empty();
    let mut buffer = String::new();
    let (mut total, mut agreed, mut corrected) = (0usize, 0usize, 0usize);
    let mut errata_used: BTreeMap<&str, usize> = BTreeMap::new();
    let mut misses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (turn, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let route: serde_json::Value = serde_json::from_str(line).expect("a JSON route");
        let method = route["method"].as_str().unwrap_or_default();
        let template = route["path"].as_str().unwrap_or_default();
        let wanted: Vec<&str> = route["operations"]
            .as_array()
            .map(|a| a.iter().filter_map(|o| o.as_str()).collect())
            .unwrap_or_default();
        total += 1;
        let path = fill(template, turn);
        let method = Method::parse(method).expect("an ARM method");
        let got = match map_request(&table, method, &path, &mut buffer) {
            Ok(m) => m,
            Err(e) => {
                misses
                    .entry("refused".into())
                    .or_default()
                    .push(format!("{} {path}: {e}", method.as_str()));
                continue;
            }
        };
        // Whatever the operation, the scope must be a prefix of the path
        // and a scope the engine accepts.
        assert!(path.starts_with(got.scope), "{path} → scope {}", got.scope);
        if let Err(e) = Scope::parse(got.scope) {
            panic!("{path} → scope {} which {e}", got.scope);
        }
        if wanted.iter().any(|w| w.eq_ignore_ascii_case(got.operation)) {
            agreed += 1;
        } else if let Some(why) = wanted.iter().find_map(|w| erratum(w, got.operation)) {
            corrected += 1;
            *errata_used.entry(why).or_default() += 1;
        } else {
            let namespace = wanted
                .first()
                .and_then(|w| w.split('/').next())
                .unwrap_or("?")
                .to_owned();
            misses.entry(namespace).or_default().push(format!(
                "{} {template}: got {}, wanted {}",
                method.as_str(),
                got.operation,
                wanted.join(" or ")
            ));
        }
    }
    let percent = |n: usize| n as f64 * 100.0 / total as f64;
    let right = agreed + corrected;
    println!(
        "ARM routes: {right} of {total} mapped to the operation that authorizes them ({:.2}%)",
        percent(right)
    );
    println!(
        "  agreeing with the data set: {agreed} ({:.2}%); right where the data set is not: {corrected}",
        percent(agreed)
    );
    for (why, n) in &errata_used {
        println!("    {n} × {why}");
    }
    for (category, list) in &misses {
        println!("  misses in {category} ({}):", list.len());
        for miss in list {
            println!("    {miss}");
        }
    }
    assert!(
        total > 1000,
        "only {total} routes read from {}",
        file.display()
    );
    assert!(percent(right) >= 99.0, "only {:.2}% right", percent(right));
    // The errata may not carry the score: most answers must agree with the
    // data set as it stands.
    assert!(
        percent(agreed) >= 98.5,
        "only {:.2}% agree with the data set",
        percent(agreed)
    );
}

// ---------------------------------------------------------------------------
// Allocations

/// Counts allocations made by the current thread while counting is on, so
/// tests running in parallel do not disturb each other.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    ALLOCATIONS.with(|n| n.get())
}

const SUB: &str = "/subscriptions/00000000-0000-4000-8000-000000000001";

fn requests() -> Vec<(Method, String)> {
    let rg = format!("{SUB}/resourceGroups/rg-app");
    vec![
        (Method::Get, format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm-1?api-version=2024-03-01")),
        (Method::Put, format!("{rg}/providers/Microsoft.Storage/storageAccounts/st1")),
        (Method::Post, format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm-1/restart")),
        (Method::Get, format!("{SUB}/providers/Microsoft.Compute/virtualMachines")),
        (Method::Put, format!("{rg}/providers/Microsoft.Web/sites/app/providers/Microsoft.Authorization/roleAssignments/ra-1")),
        (Method::Post, format!("{rg}/providers/Microsoft.Web/sites/app/config/appsettings/list")),
        (Method::Post, format!("{rg}/providers/Microsoft.Network/networkWatchers/nw/nextHop")),
        (Method::Get, rg.clone()),
        (Method::Delete, format!("{SUB}/tagNames/env")),
        (Method::Get, format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm-1/../../x")),
        (Method::Get, "/api/orders/17".to_owned()),
    ]
}

#[test]
fn mapping_does_not_allocate_once_its_buffer_has_grown() {
    let table = RouteTable::compile(&[
        RouteSpec {
            method: "POST".into(),
            path: "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{}/config/appsettings/list".into(),
            operation: "Microsoft.Web/sites/config/list/action".into(),
            data_action: false,
            scope: Some("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{}".into()),
        },
        RouteSpec {
            method: "GET".into(),
            path: "/api/orders/{id}".into(),
            operation: "Contoso.Orders/orders/read".into(),
            data_action: true,
            scope: Some(format!("{SUB}/resourceGroups/rg-api/providers/Contoso.Orders/apis/orders")),
        },
    ])
    .expect("valid routes");
    let requests = requests();
    let mut buffer = String::with_capacity(256);
    let mut answered = 0;
    let allocations = allocations_during(|| {
        for _ in 0..100 {
            for (method, path) in &requests {
                if map_request(&table, *method, path, &mut buffer).is_ok() {
                    answered += 1;
                }
            }
        }
    });
    // Every request above but the `..` one maps; the counter must have
    // seen real work.
    assert_eq!(answered, 100 * (requests.len() - 1));
    assert_eq!(
        allocations,
        0,
        "allocations in {} mappings",
        100 * requests.len()
    );
    // And the counter does count: a fresh buffer allocates as it grows.
    let fresh = allocations_during(|| {
        let mut empty = String::new();
        let _ = map_request(&table, Method::Get, &requests[0].1, &mut empty);
    });
    assert!(fresh > 0, "the counting allocator saw nothing");
}
