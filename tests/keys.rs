//! Key-based access (docs/model.md#access-keys) over gRPC: a key grants every data-plane
//! operation at its resource and below, nothing on the control plane,
//! nothing elsewhere, and nothing at all where local auth is disabled.

mod common;

use common::{decision, TestServer};
use rampart::proto::{Decision, MatchKind, Reason};

const ST: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1";
const ST_LOCKED: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st2";

const SNAPSHOT: &str = "
revision: keys-1
principals:
  - { id: alice, type: User }
resources:
  - scope: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1
  - scope: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st2
    disableLocalAuth: true
accessKeys:
  - id: key-st1
    resource: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1
  - id: key-st2
    resource: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st2
";

const BLOB_WRITE: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write";

#[tokio::test]
async fn a_key_grants_every_data_operation_at_its_resource_and_below() {
    let s = TestServer::start(SNAPSHOT).await;
    let container = format!("{ST}/blobServices/default/containers/c1");
    for scope in [ST, &container] {
        let r = s.explain("key-st1", BLOB_WRITE, scope, true).await;
        assert_eq!(
            decision(&r),
            (Decision::Allow, Reason::KeyAccess),
            "{scope}"
        );
        assert_eq!(r.matches[0].kind(), MatchKind::MatchAccessKey);
        assert_eq!(r.matches[0].id, "key-st1");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_key_never_grants_the_control_plane_or_another_resource() {
    let s = TestServer::start(SNAPSHOT).await;
    let control = s
        .authorize(
            "key-st1",
            "Microsoft.Storage/storageAccounts/delete",
            ST,
            false,
        )
        .await;
    assert_eq!(
        decision(&control),
        (Decision::Deny, Reason::NoMatchingAssignment)
    );
    let listkeys = s
        .authorize(
            "key-st1",
            "Microsoft.Storage/storageAccounts/listKeys/action",
            ST,
            false,
        )
        .await;
    assert_eq!(
        decision(&listkeys),
        (Decision::Deny, Reason::NoMatchingAssignment)
    );
    let other = s.authorize("key-st1", BLOB_WRITE, ST_LOCKED, true).await;
    assert_eq!(
        decision(&other),
        (Decision::Deny, Reason::NoMatchingAssignment)
    );
    let parent = s
        .authorize(
            "key-st1",
            BLOB_WRITE,
            "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg",
            true,
        )
        .await;
    assert_eq!(
        decision(&parent),
        (Decision::Deny, Reason::NoMatchingAssignment)
    );
    s.stop().await;
}

#[tokio::test]
async fn disabling_local_auth_refuses_the_key() {
    let s = TestServer::start(SNAPSHOT).await;
    let r = s
        .authorize(
            "key-st2",
            BLOB_WRITE,
            &format!("{ST_LOCKED}/blobServices/default"),
            true,
        )
        .await;
    assert_eq!(decision(&r), (Decision::Deny, Reason::LocalAuthDisabled));
    s.stop().await;
}

#[tokio::test]
async fn key_ids_that_are_not_keys_are_unknown_principals() {
    let s = TestServer::start(SNAPSHOT).await;
    let r = s.authorize("key-st3", BLOB_WRITE, ST, true).await;
    assert_eq!(decision(&r), (Decision::Deny, Reason::UnknownPrincipal));
    s.stop().await;
}
