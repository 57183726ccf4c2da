//! Mapping an ARM request (method, path) to its RBAC (operation, scope), as
//! the ext_authz front door does for every request an agent sends:
//!
//! - `get_instance`, `put_instance`, `post_action`, `list_collection`,
//!   `extension_resource`: ARM's derivation on typical paths (with the
//!   `api-version` query Envoy passes along);
//! - `built_in_exception`: a POST the built-in table turns into a read;
//! - `route_hit`: a user route among 64, with a scope taken from the path;
//! - `refused`: a path with `..`, answered with an error.
//!
//! After the timings it prints the allocations per mapping, counted by a
//! global allocator over 10,000 mappings of each kind with a warm buffer.
//!
//! Run with `cargo bench --bench arm_mapping`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{criterion_group, criterion_main, Criterion};
use rampart::extauthz::{map_request, Method, RouteSpec, RouteTable};

struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const SUB: &str = "/subscriptions/6f1c8e2a-3b4d-4c5e-9f60-7a8b9c0d1e2f";
const QUERY: &str = "?api-version=2024-03-01";

fn cases() -> Vec<(&'static str, Method, String)> {
    let rg = format!("{SUB}/resourceGroups/rg-prod-westeurope");
    let vm = format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm-web-01");
    vec![
        ("get_instance", Method::Get, format!("{vm}{QUERY}")),
        (
            "put_instance",
            Method::Put,
            format!("{rg}/providers/Microsoft.Storage/storageAccounts/stprodlogs01{QUERY}"),
        ),
        ("post_action", Method::Post, format!("{vm}/restart{QUERY}")),
        (
            "list_collection",
            Method::Get,
            format!("{SUB}/providers/Microsoft.Compute/virtualMachines{QUERY}"),
        ),
        (
            "extension_resource",
            Method::Put,
            format!("{vm}/providers/Microsoft.Authorization/roleAssignments/0b5a7c1e-2d3f-4a5b-8c6d-7e8f9a0b1c2d{QUERY}"),
        ),
        (
            "built_in_exception",
            Method::Post,
            format!("{rg}/providers/Microsoft.Network/networkWatchers/nw-westeurope/nextHop{QUERY}"),
        ),
        (
            "route_hit",
            Method::Post,
            format!("{rg}/providers/Microsoft.Web/sites/app-orders/config/appsettings/list{QUERY}"),
        ),
        ("refused", Method::Get, format!("{vm}/../../other{QUERY}")),
    ]
}

/// 64 routes of the shape a real table has, the one hit among them.
fn route_table() -> RouteTable {
    let mut specs: Vec<RouteSpec> = (0..63)
        .map(|i| RouteSpec {
            method: if i % 2 == 0 { "GET" } else { "POST" }.into(),
            path: format!(
                "/subscriptions/{{}}/resourceGroups/{{}}/providers/Microsoft.Web/sites/{{}}/config/setting{i}/list"
            ),
            operation: format!("Microsoft.Web/sites/config/setting{i}/action"),
            data_action: false,
            scope: None,
        })
        .collect();
    specs.push(RouteSpec {
        method: "POST".into(),
        path: "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{}/config/appsettings/list".into(),
        operation: "Microsoft.Web/sites/config/list/action".into(),
        data_action: false,
        scope: Some("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{}".into()),
    });
    RouteTable::compile(&specs).unwrap_or_else(|e| panic!("{e}"))
}

fn bench(c: &mut Criterion) {
    let table = route_table();
    let cases = cases();
    let mut group = c.benchmark_group("arm_mapping");
    let mut buffer = String::with_capacity(256);
    for (name, method, path) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let mapped = map_request(&table, *method, black_box(path), &mut buffer);
                black_box(mapped.map(|m| (m.operation.len(), m.scope.len())))
            })
        });
    }
    group.finish();

    const N: usize = 10_000;
    for (name, method, path) in &cases {
        let _ = map_request(&table, *method, path, &mut buffer);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..N {
            let _ = black_box(map_request(&table, *method, black_box(path), &mut buffer).is_ok());
        }
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        println!(
            "arm_mapping/{name}: {allocations} allocations in {N} mappings ({} per mapping)",
            allocations as f64 / N as f64
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
