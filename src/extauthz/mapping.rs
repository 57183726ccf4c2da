//! Maps an HTTP request to the Azure RBAC (operation, scope) that authorizes
//! it, deriving the action from the method and path as Azure Resource
//! Manager does.
//!
//! # The rule
//!
//! From the innermost `/providers/{Namespace}` the path alternates resource
//! types and names. The operation is the namespace, every type, then a verb
//! from the method: GET and HEAD `read`, PUT and PATCH `write`, DELETE
//! `delete`, POST `action`. A POST whose path ends in a name after a type
//! (`…/virtualMachines/vm1/restart`) names the action, so the operation is
//! `Microsoft.Compute/virtualMachines/restart/action`; a POST ending at an
//! instance gives `…/virtualMachines/action`.
//!
//! The scope is the longest prefix of the path that is itself a scope:
//! the instance for a request ending at one, the parent for a collection
//! (`GET …/virtualMachines`) or an action. An extension resource
//! (`{scope}/providers/Microsoft.Authorization/roleAssignments/{id}`, or
//! anything under another provider's resource) takes the innermost provider
//! for its operation and its own full id as its scope: that is the id ARM
//! authorizes, and assignments on the resource it extends still apply
//! because the id lies below it.
//!
//! Paths without a provider belong to `Microsoft.Resources`, the path being
//! the type chain: `GET /subscriptions/{id}/resourceGroups` is
//! `Microsoft.Resources/subscriptions/resourceGroups/read` at the
//! subscription, `GET /providers` is `Microsoft.Resources/providers/read`.
//!
//! ARM's own exceptions (a POST that is a read, an operation named after
//! another type) come from a small built-in table, consulted after the
//! user's [`RouteTable`] and before the rule.
//!
//! # What the path must look like
//!
//! - The query string is ignored; a `#` is refused (a fragment never
//!   reaches a server, so one in a path is an attempt at confusion).
//! - One trailing `/` is ignored, as ARM ignores it; `//` anywhere else is
//!   an empty segment and refused, as are `.` and `..` segments, and
//!   segments ending in `.` or `%20`, which Windows-based servers may trim
//!   (Azure names cannot end in either).
//! - Names and keywords compare ASCII case-insensitively.
//! - Percent escapes are kept as they are, never decoded, so the scope is
//!   a slice of the path. To keep one spelling per name (otherwise a deny
//!   assignment could be slipped past by spelling its scope differently),
//!   an escape is accepted only for a printable ASCII character that cannot
//!   appear raw in a path segment (space, `"`, `#`, `<`, `>`, `?`, `[`,
//!   `]`, `^`, `` ` ``, `{`, `|`, `}`). An escape of a character that may
//!   appear raw (`%41`, `%2E`, `%28`…) is refused, and so are `%2F`, `%5C`,
//!   `%25`, escaped control characters and non-ASCII bytes, raw or escaped:
//!   the engine folds ASCII case only, so a non-ASCII name has spellings it
//!   cannot tell apart.
//! - At most [`MAX_PATH_LEN`] bytes before the query, in at most
//!   [`MAX_SEGMENTS`] segments.
//!
//! Nothing here allocates per request: the scope borrows the path, the
//! operation is a static string, a route's own string, or written into a
//! buffer the caller reuses.

use super::routes::RouteTable;
use crate::model::action::MAX_OPERATION_LEN;
use crate::model::scope::MAX_SCOPE_LEN;

/// The longest path accepted, in bytes, query string excluded: a scope is
/// at most this long, and the scope is a prefix of the path.
pub const MAX_PATH_LEN: usize = MAX_SCOPE_LEN;

/// The HTTP methods ARM serves. Anything else (OPTIONS, TRACE…) has no
/// RBAC verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Put,
    Patch,
    Delete,
    Post,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::Get,
        Method::Head,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Post,
    ];

    /// Parses a request method. HTTP methods are case-sensitive, and Envoy
    /// passes them as sent, so only the uppercase spelling is accepted.
    pub fn parse(text: &str) -> Result<Method, MappingError> {
        Ok(match text {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "POST" => Method::Post,
            _ => return Err(MappingError::UnsupportedMethod),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Post => "POST",
        }
    }

    /// The last segment of the operation ARM derives for this method.
    pub fn verb(self) -> &'static str {
        match self {
            Method::Get | Method::Head => "read",
            Method::Put | Method::Patch => "write",
            Method::Delete => "delete",
            Method::Post => "action",
        }
    }

    /// This method's bit in a method set.
    pub(crate) fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Every method's bit.
pub(crate) const ANY_METHOD: u8 = 0b11_1111;

/// The RBAC question a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping<'a> {
    /// The operation, e.g. `Microsoft.Compute/virtualMachines/restart/action`,
    /// spelled as the path spells it (the engine compares case-insensitively).
    pub operation: &'a str,
    /// The scope: a prefix of the path (or a route's fixed scope).
    pub scope: &'a str,
    /// Whether `operation` is a data action (only routes say so).
    pub data_action: bool,
    /// Which rule decided, for audit and explanations.
    pub by: MappedBy,
}

/// Which rule produced a [`Mapping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappedBy {
    /// The user route at this index of the specs the table was compiled from.
    Route(usize),
    /// An entry of the built-in table of ARM exceptions.
    BuiltIn,
    /// ARM's derivation from the path.
    Derived,
}

/// Why a request could not be mapped. The service answers HTTP 400 with
/// this message; byte offsets count from the start of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("the method is not one of GET, HEAD, PUT, PATCH, DELETE or POST")]
    UnsupportedMethod,
    #[error("the path is empty")]
    Empty,
    #[error("the path must start with '/'")]
    NotAbsolute,
    #[error("the path is {0} bytes long before the query; the limit is {MAX_PATH_LEN}")]
    TooLong(usize),
    #[error("the path has more than {MAX_SEGMENTS} segments")]
    TooManySegments,
    #[error("the path has an empty segment ('//') at byte {0}")]
    EmptySegment(usize),
    #[error("the path has a '.' or '..' segment at byte {0}")]
    DotSegment(usize),
    #[error("the path has a segment ending in '.' or an encoded space at byte {0}; servers that trim them would see another name")]
    TrailingDotOrSpace(usize),
    #[error("the path has a percent-encoded '/' or '\\' at byte {0}")]
    EncodedSeparator(usize),
    #[error("the path has a '\\' at byte {0}")]
    Backslash(usize),
    #[error("the path has a control character, raw or percent-encoded, at byte {0}")]
    ControlCharacter(usize),
    #[error("the path has a non-ASCII character, raw or percent-encoded, at byte {0}; such names have more than one spelling and are refused")]
    NonAscii(usize),
    #[error("the path has a malformed percent escape at byte {0}")]
    BadEscape(usize),
    #[error("the path percent-encodes '%' at byte {0} (double encoding)")]
    EncodedPercent(usize),
    #[error("the path percent-encodes '{character}' at byte {at}; send it unencoded")]
    NeedlessEscape { at: usize, character: char },
    #[error("the path has '{character}' at byte {at}; it must be percent-encoded")]
    BadCharacter { at: usize, character: char },
    #[error("the path has a fragment ('#') at byte {0}")]
    Fragment(usize),
    #[error("the path matches no route and is not an Azure Resource Manager path (those start with /subscriptions, /providers or /tenants)")]
    NotArm,
    #[error("'providers' at byte {0} is not followed by a resource provider namespace and a resource type")]
    ProviderWithoutType(usize),
    #[error("'providers' at byte {0} cannot follow the resource type before it")]
    UnexpectedProviders(usize),
    #[error("the operation would be longer than {MAX_OPERATION_LEN} bytes")]
    OperationTooLong,
    #[error("the matching route's scope, filled from this path, is not a valid scope")]
    RouteScope,
}

/// Maps a request. `path` is the request target as Envoy gives it (query
/// string included); `operation` is a buffer reused across calls, written
/// only when the operation is derived from the path. User routes win over
/// the built-in exceptions, which win over ARM's rule; malformed paths are
/// refused before any of them is consulted.
pub fn map_request<'a>(
    routes: &'a RouteTable,
    method: Method,
    path: &'a str,
    operation: &'a mut String,
) -> Result<Mapping<'a>, MappingError> {
    let request = validate(path)?;
    if let Some(route) = routes.find(method, &request) {
        return Ok(Mapping {
            operation: route.operation(),
            scope: route.scope(&request)?,
            data_action: route.data_action(),
            by: MappedBy::Route(route.index()),
        });
    }
    let derived = derive(&request, request.segments)?;
    let scope = request.scope(derived.scope_end);
    if let Some(entry) = BUILT_IN
        .iter()
        .find(|e| e.applies(method, &request, &derived))
    {
        let operation = match entry.operation {
            BuiltInOperation::Fixed(op) => op,
            BuiltInOperation::Verb(prefix) => {
                operation.clear();
                operation.push_str(prefix);
                operation.push('/');
                operation.push_str(method.verb());
                operation.as_str()
            }
        };
        return Ok(Mapping {
            operation,
            scope,
            data_action: false,
            by: MappedBy::BuiltIn,
        });
    }
    write_operation(operation, &request, &derived, method.verb());
    if operation.len() > MAX_OPERATION_LEN {
        return Err(MappingError::OperationTooLong);
    }
    Ok(Mapping {
        operation: operation.as_str(),
        scope,
        data_action: false,
        by: MappedBy::Derived,
    })
}

// ---------------------------------------------------------------------------
// Path validation

/// The most segments a path may have. ARM's deepest routes, nested under
/// an extension scope, have about 25.
pub const MAX_SEGMENTS: usize = 64;

/// A validated path: query and one trailing slash removed, and where each
/// segment ends, so later passes index instead of searching.
#[derive(Debug, Clone)]
pub(crate) struct RequestPath<'a> {
    /// Starts with `/`; `/` alone or segments that are all non-empty.
    pub text: &'a str,
    /// How many segments (0 for `/`).
    pub segments: usize,
    /// `ends[i]`: the byte offset just past segment `i`.
    ends: [u16; MAX_SEGMENTS],
}

impl<'a> RequestPath<'a> {
    /// Segment `i` (< `segments`).
    pub fn segment(&self, i: usize) -> &'a str {
        let start = if i == 0 {
            1
        } else {
            self.ends[i - 1] as usize + 1
        };
        &self.text[start..self.ends[i] as usize]
    }

    /// Where segment `i` starts.
    fn start(&self, i: usize) -> usize {
        if i == 0 {
            1
        } else {
            self.ends[i - 1] as usize + 1
        }
    }

    /// The first `count` segments as a path (`/` for none).
    pub fn prefix(&self, count: usize) -> &'a str {
        if count == 0 {
            &self.text[..1]
        } else {
            &self.text[..self.ends[count - 1] as usize]
        }
    }

    /// The scope ending at byte `end` (0: the root scope `/`).
    fn scope(&self, end: usize) -> &'a str {
        &self.text[..end.max(1)]
    }
}

/// Byte classes of a path segment.
const OK: u8 = 0; // may appear raw: unreserved, sub-delims, ':' and '@'
const PERCENT: u8 = 1;
const BACKSLASH: u8 = 2;
const CONTROL: u8 = 3;
const HASH: u8 = 4;
const HIGH: u8 = 5;
const MUST_ENCODE: u8 = 6; // printable ASCII that only an escape may carry
const SLASH: u8 = 7;
const QUERY: u8 = 8; // '?': the path ends

static CLASS: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut table = [MUST_ENCODE; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c < 0x20 || c == 0x7f {
            CONTROL
        } else if c >= 0x80 {
            HIGH
        } else if c.is_ascii_alphanumeric() {
            OK
        } else {
            match c {
                b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*'
                | b'+' | b',' | b';' | b'=' | b':' | b'@' => OK,
                b'%' => PERCENT,
                b'\\' => BACKSLASH,
                b'#' => HASH,
                b'/' => SLASH,
                b'?' => QUERY,
                _ => MUST_ENCODE,
            }
        };
        b += 1;
    }
    table
}

/// Validates a request target and strips its query and trailing slash.
pub(crate) fn validate(target: &str) -> Result<RequestPath<'_>, MappingError> {
    let bytes = target.as_bytes();
    match bytes.first() {
        None | Some(b'?') => return Err(MappingError::Empty),
        Some(b'/') => {}
        Some(_) => return Err(MappingError::NotAbsolute),
    }
    if bytes.len() > MAX_PATH_LEN {
        let length = target.find('?').unwrap_or(target.len());
        if length > MAX_PATH_LEN {
            return Err(MappingError::TooLong(length));
        }
    }
    let mut ends = [0u16; MAX_SEGMENTS];
    let mut segments = 0;
    let end = scan(bytes, 1, 0, |end| {
        let slot = ends
            .get_mut(segments)
            .ok_or(MappingError::TooManySegments)?;
        *slot = end as u16;
        segments += 1;
        Ok(())
    })?;
    // One trailing slash ends no segment: `/a/` is `/a`, `/` the root.
    let text = if end > 1 && bytes[end - 1] == b'/' {
        &target[..end - 1]
    } else {
        &target[..end]
    };
    Ok(RequestPath {
        text,
        segments,
        ends,
    })
}

/// Checks one segment (text without `/`); `at` is its byte offset, for
/// the error.
pub(crate) fn check_segment(segment: &str, at: usize) -> Result<(), MappingError> {
    if segment.is_empty() {
        return Err(MappingError::EmptySegment(at));
    }
    scan(segment.as_bytes(), 0, at, |_| Ok(())).map(drop)
}

/// Checks the `/`-separated segments of `bytes[from..]` up to a `?` or the
/// end, in one pass, calling `segment_end` with each segment's end, and
/// returns where it stopped. `base` is added to offsets in errors. Allowed
/// bytes and `/` take one table look-up each. A last segment that is empty
/// (a trailing slash) is not reported; any other empty one is an error.
#[inline(always)]
fn scan(
    bytes: &[u8],
    from: usize,
    base: usize,
    mut segment_end: impl FnMut(usize) -> Result<(), MappingError>,
) -> Result<usize, MappingError> {
    let mut start = from;
    let mut i = from;
    while i < bytes.len() {
        // The common case, a run of ordinary bytes, in a tight loop.
        i += bytes[i..]
            .iter()
            .position(|&b| CLASS[b as usize] != OK)
            .unwrap_or(bytes.len() - i);
        let Some(&byte) = bytes.get(i) else {
            break;
        };
        match CLASS[byte as usize] {
            SLASH => {
                end_segment(bytes, start, i, base)?;
                segment_end(i)?;
                i += 1;
                start = i;
            }
            PERCENT => {
                check_escape(bytes, i, base + i)?;
                i += 3;
            }
            QUERY => break,
            class => return Err(refused_byte(class, byte, base + i)),
        }
    }
    if start < i {
        end_segment(bytes, start, i, base)?;
        segment_end(i)?;
    }
    Ok(i)
}

fn end_segment(bytes: &[u8], start: usize, end: usize, base: usize) -> Result<(), MappingError> {
    match &bytes[start..end] {
        [] => Err(MappingError::EmptySegment(base + start)),
        [b'.'] | [b'.', b'.'] => Err(MappingError::DotSegment(base + start)),
        [.., b'.'] | [.., b'%', b'2', b'0'] => Err(MappingError::TrailingDotOrSpace(base + start)),
        _ => Ok(()),
    }
}

#[cold]
fn refused_byte(class: u8, byte: u8, at: usize) -> MappingError {
    match class {
        BACKSLASH => MappingError::Backslash(at),
        CONTROL => MappingError::ControlCharacter(at),
        HASH => MappingError::Fragment(at),
        HIGH => MappingError::NonAscii(at),
        _ => MappingError::BadCharacter {
            at,
            character: byte as char,
        },
    }
}

#[cold]
fn check_escape(bytes: &[u8], i: usize, pos: usize) -> Result<(), MappingError> {
    let hex = |b: u8| (b as char).to_digit(16);
    let (Some(hi), Some(lo)) = (
        bytes.get(i + 1).and_then(|&b| hex(b)),
        bytes.get(i + 2).and_then(|&b| hex(b)),
    ) else {
        return Err(MappingError::BadEscape(pos));
    };
    let decoded = (hi * 16 + lo) as u8;
    match CLASS[decoded as usize] {
        MUST_ENCODE | HASH | QUERY => Ok(()),
        SLASH | BACKSLASH => Err(MappingError::EncodedSeparator(pos)),
        PERCENT => Err(MappingError::EncodedPercent(pos)),
        CONTROL => Err(MappingError::ControlCharacter(pos)),
        HIGH => Err(MappingError::NonAscii(pos)),
        _ => Err(MappingError::NeedlessEscape {
            at: pos,
            character: decoded as char,
        }),
    }
}

// ---------------------------------------------------------------------------
// ARM's derivation

const MICROSOFT_RESOURCES: &str = "Microsoft.Resources";

/// What the structure of an ARM path says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Derivation<'a> {
    /// The innermost provider's namespace, or `Microsoft.Resources`.
    namespace: &'a str,
    /// The type/name chain: segments `first..count` (for
    /// `Microsoft.Resources` paths, the whole path). Never empty.
    first: usize,
    count: usize,
    /// The chain is the whole path (no provider): keywords are spelled
    /// canonically in the operation.
    implicit: bool,
    /// Where the scope ends; 0 means the root scope `/`.
    scope_end: usize,
}

/// What the walk expects next.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Root,
    SubscriptionId,
    AfterSubscription,
    ResourceGroupName,
    AfterResourceGroup,
    /// A namespace after `providers` (at byte `at`), at `level`.
    Namespace {
        level: Level,
        at: usize,
    },
    /// The first type after a namespace.
    FirstType {
        level: Level,
        at: usize,
    },
    /// The id of `/providers/Microsoft.Management/managementGroups`.
    ManagementGroupId,
    /// After a management group: only an extension provider extends the scope.
    AfterManagementGroup,
    /// A name completing a type/name pair; `extends` if the pair is part of
    /// the scope.
    Name {
        extends: bool,
    },
    /// A type, or `providers` unless the chain is `frozen` (past a point a
    /// scope cannot extend).
    Type {
        frozen: bool,
    },
    /// `Microsoft.Resources` paths: name and type positions of the chain.
    ImplicitName,
    ImplicitType,
}

/// Where a `providers` keyword sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// `/providers`: the tenant's provider list or a tenant-level provider.
    Root,
    /// `/subscriptions/{id}/providers`: the subscription's providers.
    Subscription,
    /// Under a resource group or a resource (an extension).
    Nested,
}

fn keyword(segment: &str, word: &str) -> bool {
    segment.eq_ignore_ascii_case(word)
}

/// Walks the first `count` segments of an ARM path: finds the innermost
/// provider, its type chain and the longest prefix that is a scope.
pub(crate) fn derive<'a>(
    path: &RequestPath<'a>,
    count: usize,
) -> Result<Derivation<'a>, MappingError> {
    let mut expect = Expect::Root;
    let mut namespace = "";
    let mut first = 0;
    let mut scope_end = 0;
    for i in 0..count {
        let segment = path.segment(i);
        let start = path.start(i);
        let end = path.ends[i] as usize;
        let providers = keyword(segment, "providers");
        expect = match expect {
            Expect::Root => {
                if keyword(segment, "subscriptions") {
                    Expect::SubscriptionId
                } else if providers {
                    Expect::Namespace {
                        level: Level::Root,
                        at: start,
                    }
                } else if keyword(segment, "tenants") {
                    Expect::ImplicitName
                } else {
                    return Err(MappingError::NotArm);
                }
            }
            Expect::SubscriptionId => {
                scope_end = end;
                Expect::AfterSubscription
            }
            Expect::AfterSubscription => {
                if keyword(segment, "resourceGroups") {
                    Expect::ResourceGroupName
                } else if providers {
                    Expect::Namespace {
                        level: Level::Subscription,
                        at: start,
                    }
                } else {
                    Expect::ImplicitName
                }
            }
            Expect::ResourceGroupName => {
                scope_end = end;
                Expect::AfterResourceGroup
            }
            Expect::AfterResourceGroup => {
                if providers {
                    Expect::Namespace {
                        level: Level::Nested,
                        at: start,
                    }
                } else {
                    Expect::ImplicitName
                }
            }
            Expect::ImplicitName => Expect::ImplicitType,
            Expect::ImplicitType => {
                if providers {
                    return Err(MappingError::UnexpectedProviders(start));
                }
                Expect::ImplicitName
            }
            Expect::Namespace { level, at } => {
                if providers {
                    return Err(MappingError::ProviderWithoutType(at));
                }
                namespace = segment;
                first = i + 1;
                if level == Level::Root {
                    // `/providers/{Namespace}` is a scope of its own.
                    scope_end = end;
                }
                Expect::FirstType { level, at }
            }
            Expect::FirstType { level, at } => {
                if providers {
                    return Err(MappingError::ProviderWithoutType(at));
                }
                let management_groups = level == Level::Root
                    && keyword(namespace, "Microsoft.Management")
                    && keyword(segment, "managementGroups");
                if management_groups {
                    Expect::ManagementGroupId
                } else {
                    Expect::Name { extends: true }
                }
            }
            Expect::ManagementGroupId => {
                scope_end = end;
                Expect::AfterManagementGroup
            }
            Expect::AfterManagementGroup => {
                if providers {
                    Expect::Namespace {
                        level: Level::Nested,
                        at: start,
                    }
                } else {
                    Expect::Name { extends: false }
                }
            }
            Expect::Name { extends } => {
                if extends {
                    scope_end = end;
                }
                Expect::Type { frozen: !extends }
            }
            Expect::Type { frozen } => {
                if providers {
                    if frozen {
                        return Err(MappingError::UnexpectedProviders(start));
                    }
                    Expect::Namespace {
                        level: Level::Nested,
                        at: start,
                    }
                } else {
                    Expect::Name { extends: !frozen }
                }
            }
        };
    }
    let implicit = Derivation {
        namespace: MICROSOFT_RESOURCES,
        first: 0,
        count,
        implicit: true,
        scope_end,
    };
    match expect {
        Expect::Root => Err(MappingError::NotArm),
        // `/providers`, `/subscriptions/{id}/providers` and the same with a
        // namespace: the provider-registration API of Microsoft.Resources.
        Expect::Namespace { level, .. } | Expect::FirstType { level, .. }
            if level != Level::Nested =>
        {
            Ok(implicit)
        }
        Expect::Namespace { at, .. } | Expect::FirstType { at, .. } => {
            Err(MappingError::ProviderWithoutType(at))
        }
        Expect::SubscriptionId
        | Expect::AfterSubscription
        | Expect::ResourceGroupName
        | Expect::AfterResourceGroup
        | Expect::ImplicitName
        | Expect::ImplicitType => Ok(implicit),
        Expect::ManagementGroupId
        | Expect::AfterManagementGroup
        | Expect::Name { .. }
        | Expect::Type { .. } => Ok(Derivation {
            namespace,
            first,
            count,
            implicit: false,
            scope_end,
        }),
    }
}

impl Derivation<'_> {
    /// Where the scope ends in the path; 0 for the root scope `/`.
    pub(crate) fn scope_end(&self) -> usize {
        self.scope_end
    }
}

/// Whether the first `count` segments of `path` are, as a whole, a scope
/// ARM paths can have.
pub(crate) fn is_scope(path: &RequestPath<'_>, count: usize) -> bool {
    count == 0 || derive(path, count).is_ok_and(|d| d.scope_end == path.ends[count - 1] as usize)
}

/// Writes `{namespace}/{type}/…/{verb}`.
fn write_operation(out: &mut String, path: &RequestPath<'_>, derived: &Derivation<'_>, verb: &str) {
    out.clear();
    out.push_str(derived.namespace);
    for i in (derived.first..derived.count).step_by(2) {
        let segment = path.segment(i);
        out.push('/');
        out.push_str(if derived.implicit {
            canonical(segment)
        } else {
            segment
        });
    }
    out.push('/');
    out.push_str(verb);
}

/// Microsoft.Resources keywords as its operations spell them.
fn canonical(segment: &str) -> &str {
    const WORDS: [&str; 4] = ["subscriptions", "resourceGroups", "providers", "tenants"];
    WORDS
        .into_iter()
        .find(|w| segment.eq_ignore_ascii_case(w))
        .unwrap_or(segment)
}

// ---------------------------------------------------------------------------
// ARM's exceptions

/// One exception: requests whose innermost provider is `namespace` and
/// whose type chain matches `chain` (`{}` is any one segment; with
/// `and_below`, deeper chains too).
struct BuiltIn {
    methods: u8,
    namespace: &'static str,
    chain: &'static [&'static str],
    and_below: bool,
    operation: BuiltInOperation,
}

enum BuiltInOperation {
    /// This operation whatever the method.
    Fixed(&'static str),
    /// This prefix and the method's verb.
    Verb(&'static str),
}

const POST: u8 = 1 << Method::Post as u8;
const READS: u8 = 1 << Method::Get as u8 | 1 << Method::Head as u8;

/// Where ARM authorizes a request with an operation other than the one its
/// path spells. Each entry is what the provider registered for that REST
/// call; entries are few and specific on purpose.
static BUILT_IN: &[BuiltIn] = &[
    // Tag names are authorized as tags.
    BuiltIn {
        methods: ANY_METHOD,
        namespace: MICROSOFT_RESOURCES,
        chain: &["subscriptions", "{}", "tagNames"],
        and_below: true,
        operation: BuiltInOperation::Verb("Microsoft.Resources/tags"),
    },
    // Network Watcher diagnostics that only read, though sent as POST.
    BuiltIn {
        methods: POST,
        namespace: "Microsoft.Network",
        chain: &["networkWatchers", "{}", "nextHop"],
        and_below: false,
        operation: BuiltInOperation::Fixed("Microsoft.Network/networkWatchers/nextHop/read"),
    },
    BuiltIn {
        methods: POST,
        namespace: "Microsoft.Network",
        chain: &["networkWatchers", "{}", "topology"],
        and_below: false,
        operation: BuiltInOperation::Fixed("Microsoft.Network/networkWatchers/topology/read"),
    },
    BuiltIn {
        methods: POST,
        namespace: "Microsoft.Network",
        chain: &["networkWatchers", "{}", "networkConfigurationDiagnostic"],
        and_below: false,
        operation: BuiltInOperation::Fixed(
            "Microsoft.Network/networkWatchers/networkConfigurationDiagnostic/read",
        ),
    },
    // Change Analysis lists changes with a POST.
    BuiltIn {
        methods: POST,
        namespace: "Microsoft.ChangeAnalysis",
        chain: &["resourceChanges"],
        and_below: false,
        operation: BuiltInOperation::Fixed("Microsoft.ChangeAnalysis/resourceChanges/read"),
    },
    // The action is a path parameter whose only value is `enforce`.
    BuiltIn {
        methods: POST,
        namespace: "Microsoft.Security",
        chain: &["adaptiveNetworkHardenings", "{}", "{}"],
        and_below: false,
        operation: BuiltInOperation::Fixed(
            "Microsoft.Security/adaptiveNetworkHardenings/enforce/action",
        ),
    },
    // Deleted storage accounts are registered at subscription level.
    BuiltIn {
        methods: READS,
        namespace: "Microsoft.Storage",
        chain: &["locations", "{}", "deletedAccounts"],
        and_below: true,
        operation: BuiltInOperation::Fixed("Microsoft.Storage/deletedAccounts/read"),
    },
    // Advisor suppressions are authorized as the top-level type.
    BuiltIn {
        methods: ANY_METHOD,
        namespace: "Microsoft.Advisor",
        chain: &["recommendations", "{}", "suppressions"],
        and_below: true,
        operation: BuiltInOperation::Verb("Microsoft.Advisor/suppressions"),
    },
    // Create-or-update sent as POST to the instance.
    BuiltIn {
        methods: POST,
        namespace: "Microsoft.EventHub",
        chain: &["namespaces", "{}", "authorizationRules", "{}"],
        and_below: false,
        operation: BuiltInOperation::Fixed(
            "Microsoft.EventHub/namespaces/authorizationRules/write",
        ),
    },
    BuiltIn {
        methods: POST,
        namespace: "Microsoft.Marketplace",
        chain: &["privateStores", "{}", "offers", "{}"],
        and_below: false,
        operation: BuiltInOperation::Fixed("Microsoft.Marketplace/privateStores/offers/write"),
    },
];

impl BuiltIn {
    fn applies(&self, method: Method, path: &RequestPath<'_>, derived: &Derivation<'_>) -> bool {
        if self.methods & method.bit() == 0
            || !derived.namespace.eq_ignore_ascii_case(self.namespace)
        {
            return false;
        }
        let length = derived.count - derived.first;
        if length < self.chain.len() || (!self.and_below && length > self.chain.len()) {
            return false;
        }
        self.chain.iter().enumerate().all(|(i, want)| {
            want.starts_with('{') || path.segment(derived.first + i).eq_ignore_ascii_case(want)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "/subscriptions/00000000-0000-4000-8000-000000000001";

    fn rg() -> String {
        format!("{SUB}/resourceGroups/rg-app")
    }

    fn vm() -> String {
        format!("{}/providers/Microsoft.Compute/virtualMachines/vm-1", rg())
    }

    /// (operation, scope, by) for a request without user routes.
    fn map(method: Method, path: &str) -> Result<(String, String, MappedBy), MappingError> {
        let mut buffer = String::new();
        map_request(&RouteTable::empty(), method, path, &mut buffer)
            .map(|m| (m.operation.to_owned(), m.scope.to_owned(), m.by))
    }

    #[track_caller]
    fn assert_maps(method: Method, path: &str, operation: &str, scope: &str) {
        match map(method, path) {
            Ok((op, sc, _)) => {
                assert_eq!((op.as_str(), sc.as_str()), (operation, scope), "{path}")
            }
            Err(e) => panic!("{} {path}: {e}", method.as_str()),
        }
    }

    #[track_caller]
    fn assert_refused(path: &str, error: MappingError) {
        assert_eq!(map(Method::Get, path).map(|m| m.0), Err(error), "{path}");
    }

    #[test]
    fn get_and_head_of_an_instance_read_at_the_instance() {
        let vm = vm();
        for method in [Method::Get, Method::Head] {
            assert_maps(method, &vm, "Microsoft.Compute/virtualMachines/read", &vm);
        }
    }

    #[test]
    fn put_and_patch_write_and_delete_deletes_at_the_instance() {
        let vm = vm();
        assert_maps(
            Method::Put,
            &vm,
            "Microsoft.Compute/virtualMachines/write",
            &vm,
        );
        assert_maps(
            Method::Patch,
            &vm,
            "Microsoft.Compute/virtualMachines/write",
            &vm,
        );
        assert_maps(
            Method::Delete,
            &vm,
            "Microsoft.Compute/virtualMachines/delete",
            &vm,
        );
    }

    #[test]
    fn post_names_an_action_on_the_parent_resource() {
        let vm = vm();
        assert_maps(
            Method::Post,
            &format!("{vm}/restart"),
            "Microsoft.Compute/virtualMachines/restart/action",
            &vm,
        );
    }

    #[test]
    fn post_to_an_instance_is_the_type_action_on_the_instance() {
        let vm = vm();
        assert_maps(
            Method::Post,
            &vm,
            "Microsoft.Compute/virtualMachines/action",
            &vm,
        );
    }

    #[test]
    fn a_collection_is_read_at_its_parent() {
        assert_maps(
            Method::Get,
            &format!("{SUB}/providers/Microsoft.Storage/storageAccounts"),
            "Microsoft.Storage/storageAccounts/read",
            SUB,
        );
        assert_maps(
            Method::Get,
            &format!("{}/providers/Microsoft.Compute/virtualMachines", rg()),
            "Microsoft.Compute/virtualMachines/read",
            &rg(),
        );
        let vm = vm();
        assert_maps(
            Method::Get,
            &format!("{vm}/extensions"),
            "Microsoft.Compute/virtualMachines/extensions/read",
            &vm,
        );
    }

    #[test]
    fn child_resources_chain_their_types() {
        let path = format!(
            "{}/providers/Microsoft.Sql/servers/s1/databases/db1/backupShortTermRetentionPolicies/default",
            rg()
        );
        assert_maps(
            Method::Put,
            &path,
            "Microsoft.Sql/servers/databases/backupShortTermRetentionPolicies/write",
            &path,
        );
    }

    #[test]
    fn an_extension_resource_takes_the_innermost_provider_and_its_own_id_as_scope() {
        let at =
            |scope: &str| format!("{scope}/providers/Microsoft.Authorization/roleAssignments/ra-1");
        for scope in [
            SUB.to_owned(),
            rg(),
            vm(),
            "/providers/Microsoft.Management/managementGroups/mg-1".to_owned(),
        ] {
            let path = at(&scope);
            assert_maps(
                Method::Put,
                &path,
                "Microsoft.Authorization/roleAssignments/write",
                &path,
            );
            assert_maps(
                Method::Get,
                &format!("{scope}/providers/Microsoft.Authorization/roleAssignments"),
                "Microsoft.Authorization/roleAssignments/read",
                &scope,
            );
        }
        let vm = vm();
        let guest = format!(
            "{vm}/providers/Microsoft.GuestConfiguration/guestConfigurationAssignments/baseline"
        );
        assert_maps(
            Method::Put,
            &guest,
            "Microsoft.GuestConfiguration/guestConfigurationAssignments/write",
            &guest,
        );
        assert_maps(
            Method::Get,
            &format!("{vm}/providers/Microsoft.Insights/diagnosticSettings"),
            "Microsoft.Insights/diagnosticSettings/read",
            &vm,
        );
    }

    #[test]
    fn management_groups_are_scopes_and_what_is_below_them_without_a_provider_is_not() {
        let mg = "/providers/Microsoft.Management/managementGroups/mg-1";
        assert_maps(
            Method::Get,
            mg,
            "Microsoft.Management/managementGroups/read",
            mg,
        );
        assert_maps(
            Method::Put,
            &format!("{mg}/subscriptions/00000000-0000-4000-8000-000000000001"),
            "Microsoft.Management/managementGroups/subscriptions/write",
            mg,
        );
        assert_maps(
            Method::Get,
            "/providers/Microsoft.Management/managementGroups",
            "Microsoft.Management/managementGroups/read",
            "/providers/Microsoft.Management",
        );
        let below =
            format!("{mg}/subscriptions/s1/providers/Microsoft.Authorization/roleAssignments/x");
        assert_eq!(
            map(Method::Get, &below).map(|m| m.0),
            Err(MappingError::UnexpectedProviders(mg.len() + 18))
        );
    }

    #[test]
    fn tenant_level_providers_are_scopes_of_their_own() {
        assert_maps(
            Method::Get,
            "/providers/Microsoft.Capacity/reservationOrders/o-1",
            "Microsoft.Capacity/reservationOrders/read",
            "/providers/Microsoft.Capacity/reservationOrders/o-1",
        );
        assert_maps(
            Method::Get,
            "/providers/Microsoft.Compute/operations",
            "Microsoft.Compute/operations/read",
            "/providers/Microsoft.Compute",
        );
    }

    #[test]
    fn paths_without_a_provider_are_microsoft_resources_operations() {
        let rg = rg();
        let cases: &[(Method, String, &str, &str)] = &[
            (
                Method::Get,
                "/subscriptions".into(),
                "Microsoft.Resources/subscriptions/read",
                "/",
            ),
            (
                Method::Get,
                SUB.into(),
                "Microsoft.Resources/subscriptions/read",
                SUB,
            ),
            (
                Method::Get,
                format!("{SUB}/resourcegroups"),
                "Microsoft.Resources/subscriptions/resourceGroups/read",
                SUB,
            ),
            (
                Method::Get,
                rg.clone(),
                "Microsoft.Resources/subscriptions/resourceGroups/read",
                &rg,
            ),
            (
                Method::Head,
                rg.clone(),
                "Microsoft.Resources/subscriptions/resourceGroups/read",
                &rg,
            ),
            (
                Method::Put,
                rg.clone(),
                "Microsoft.Resources/subscriptions/resourceGroups/write",
                &rg,
            ),
            (
                Method::Delete,
                rg.clone(),
                "Microsoft.Resources/subscriptions/resourceGroups/delete",
                &rg,
            ),
            (
                Method::Post,
                format!("{rg}/moveResources"),
                "Microsoft.Resources/subscriptions/resourceGroups/moveResources/action",
                &rg,
            ),
            (
                Method::Get,
                format!("{rg}/resources"),
                "Microsoft.Resources/subscriptions/resourceGroups/resources/read",
                &rg,
            ),
            (
                Method::Get,
                format!("{SUB}/resources"),
                "Microsoft.Resources/subscriptions/resources/read",
                SUB,
            ),
            (
                Method::Get,
                format!("{SUB}/locations"),
                "Microsoft.Resources/subscriptions/locations/read",
                SUB,
            ),
            (
                Method::Get,
                format!("{SUB}/operationresults/op-1"),
                "Microsoft.Resources/subscriptions/operationresults/read",
                SUB,
            ),
            (
                Method::Get,
                "/providers".into(),
                "Microsoft.Resources/providers/read",
                "/",
            ),
            (
                Method::Get,
                "/providers/Microsoft.Compute".into(),
                "Microsoft.Resources/providers/read",
                "/providers/Microsoft.Compute",
            ),
            (
                Method::Get,
                format!("{SUB}/providers"),
                "Microsoft.Resources/subscriptions/providers/read",
                SUB,
            ),
            (
                Method::Get,
                format!("{SUB}/providers/Microsoft.Compute"),
                "Microsoft.Resources/subscriptions/providers/read",
                SUB,
            ),
            (
                Method::Post,
                format!("{SUB}/providers/Microsoft.Compute/register"),
                "Microsoft.Compute/register/action",
                SUB,
            ),
            (
                Method::Get,
                "/tenants".into(),
                "Microsoft.Resources/tenants/read",
                "/",
            ),
            (
                Method::Put,
                format!("{rg}/providers/Microsoft.Resources/deployments/d1"),
                "Microsoft.Resources/deployments/write",
                "",
            ),
        ];
        for (method, path, operation, scope) in cases {
            let scope = if scope.is_empty() {
                path.as_str()
            } else {
                scope
            };
            assert_maps(*method, path, operation, scope);
        }
    }

    #[test]
    fn tag_names_are_authorized_as_tags() {
        for (method, verb) in [
            (Method::Get, "read"),
            (Method::Put, "write"),
            (Method::Delete, "delete"),
        ] {
            assert_maps(
                method,
                &format!("{SUB}/tagNames/env"),
                &format!("Microsoft.Resources/tags/{verb}"),
                SUB,
            );
        }
        assert_maps(
            Method::Put,
            &format!("{SUB}/tagNames/env/tagValues/prod"),
            "Microsoft.Resources/tags/write",
            SUB,
        );
    }

    #[test]
    fn names_and_keywords_compare_case_insensitively() {
        let path = format!(
            "/SUBSCRIPTIONS/{}/RESOURCEGROUPS/rg-app/PROVIDERS/microsoft.compute/VIRTUALMACHINES/vm-1",
            &SUB["/subscriptions/".len()..]
        );
        let (op, scope, _) = map(Method::Post, &format!("{path}/Restart")).unwrap();
        assert!(op.eq_ignore_ascii_case("Microsoft.Compute/virtualMachines/restart/action"));
        assert_eq!(scope, path);
        let (op, _, by) = map(Method::Delete, &format!("{SUB}/TAGNAMES/env")).unwrap();
        assert_eq!(
            (op.as_str(), by),
            ("Microsoft.Resources/tags/delete", MappedBy::BuiltIn)
        );
        assert_maps(
            Method::Get,
            &format!("{SUB}/ResourceGroups"),
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            SUB,
        );
    }

    #[test]
    fn the_query_string_is_ignored() {
        let vm = vm();
        assert_maps(
            Method::Get,
            &format!("{vm}?api-version=2024-03-01&$expand=instanceView/../x"),
            "Microsoft.Compute/virtualMachines/read",
            &vm,
        );
        assert_maps(
            Method::Get,
            &format!("{vm}/?api-version=1"),
            "Microsoft.Compute/virtualMachines/read",
            &vm,
        );
    }

    #[test]
    fn one_trailing_slash_is_ignored_and_two_are_an_empty_segment() {
        let vm = vm();
        assert_maps(
            Method::Get,
            &format!("{vm}/"),
            "Microsoft.Compute/virtualMachines/read",
            &vm,
        );
        assert_refused(&format!("{vm}//"), MappingError::EmptySegment(vm.len() + 1));
    }

    #[test]
    fn a_resource_named_providers_is_a_name() {
        let site = format!("{}/providers/Microsoft.Web/sites/providers", rg());
        assert_maps(Method::Get, &site, "Microsoft.Web/sites/read", &site);
        assert_maps(
            Method::Get,
            &format!("{site}/slots/providers"),
            "Microsoft.Web/sites/slots/read",
            &format!("{site}/slots/providers"),
        );
    }

    #[test]
    fn built_in_exceptions_apply_to_the_innermost_provider_only() {
        let nw = format!("{}/providers/Microsoft.Network/networkWatchers/nw-1", rg());
        let (op, scope, by) = map(Method::Post, &format!("{nw}/nextHop")).unwrap();
        assert_eq!(
            (op.as_str(), scope.as_str(), by),
            (
                "Microsoft.Network/networkWatchers/nextHop/read",
                nw.as_str(),
                MappedBy::BuiltIn
            )
        );
        // The same words at name positions are not the exception: here
        // `networkWatchers` is a name under Microsoft.Web.
        let disguised = format!(
            "{}/providers/Microsoft.Web/sites/a/b/providers/Microsoft.Network/networkWatchers/nw/nextHop",
            rg()
        );
        let (op, _, by) = map(Method::Post, &disguised).unwrap();
        assert_eq!(
            (op.as_str(), by),
            (
                "Microsoft.Web/sites/b/Microsoft.Network/nw/action",
                MappedBy::Derived
            )
        );
        // Other methods follow the rule.
        assert_maps(
            Method::Get,
            &format!("{nw}/nextHop"),
            "Microsoft.Network/networkWatchers/nextHop/read",
            &nw,
        );
    }

    #[test]
    fn built_in_exceptions_cover_the_known_arm_irregularities() {
        let rg = rg();
        let hardening = format!(
            "{rg}/providers/Microsoft.Compute/virtualMachines/vm-1/providers/Microsoft.Security/adaptiveNetworkHardenings/h1"
        );
        assert_maps(
            Method::Post,
            &format!("{hardening}/enforce"),
            "Microsoft.Security/adaptiveNetworkHardenings/enforce/action",
            &hardening,
        );
        let rule = format!("{rg}/providers/Microsoft.EventHub/namespaces/ns/authorizationRules/r1");
        assert_maps(
            Method::Post,
            &rule,
            "Microsoft.EventHub/namespaces/authorizationRules/write",
            &rule,
        );
        assert_maps(
            Method::Put,
            &rule,
            "Microsoft.EventHub/namespaces/authorizationRules/write",
            &rule,
        );
        let vm = vm();
        let suppression =
            format!("{vm}/providers/Microsoft.Advisor/recommendations/r1/suppressions/s1");
        assert_maps(
            Method::Delete,
            &suppression,
            "Microsoft.Advisor/suppressions/delete",
            &suppression,
        );
        assert_maps(
            Method::Post,
            &format!("{vm}/providers/Microsoft.ChangeAnalysis/resourceChanges"),
            "Microsoft.ChangeAnalysis/resourceChanges/read",
            &vm,
        );
        let deleted =
            format!("{SUB}/providers/Microsoft.Storage/locations/westeurope/deletedAccounts/st1");
        assert_maps(
            Method::Get,
            &deleted,
            "Microsoft.Storage/deletedAccounts/read",
            &deleted,
        );
        // listKeys and friends are ordinary actions.
        let storage = format!("{rg}/providers/Microsoft.Storage/storageAccounts/st1");
        assert_maps(
            Method::Post,
            &format!("{storage}/listKeys"),
            "Microsoft.Storage/storageAccounts/listKeys/action",
            &storage,
        );
        // A POST that only reads elsewhere stays an action unless listed.
        let cosmos = format!("{rg}/providers/Microsoft.DocumentDB/databaseAccounts/db1");
        assert_maps(
            Method::Post,
            &format!("{cosmos}/readonlykeys"),
            "Microsoft.DocumentDB/databaseAccounts/readonlykeys/action",
            &cosmos,
        );
    }

    #[test]
    fn percent_escapes_of_characters_that_need_them_are_kept_verbatim() {
        let path = format!("{}/providers/Microsoft.Web/sites/my%20site%7Bv2%7d", rg());
        assert_maps(Method::Get, &path, "Microsoft.Web/sites/read", &path);
    }

    #[test]
    fn malformed_paths_are_refused() {
        let rg = rg();
        let at = rg.len() + 1;
        let long = format!("{rg}/{}", "a".repeat(MAX_PATH_LEN));
        let cases: Vec<(String, MappingError)> = vec![
            (String::new(), MappingError::Empty),
            ("?api-version=1".into(), MappingError::Empty),
            ("subscriptions/x".into(), MappingError::NotAbsolute),
            (
                "https://management.azure.com/subscriptions/x".into(),
                MappingError::NotAbsolute,
            ),
            (long.clone(), MappingError::TooLong(long.len())),
            (format!("{long}?q"), MappingError::TooLong(long.len())),
            (
                format!("{SUB}{}", "/a".repeat(MAX_SEGMENTS)),
                MappingError::TooManySegments,
            ),
            (
                format!("{SUB}//resourceGroups/rg"),
                MappingError::EmptySegment(SUB.len() + 1),
            ),
            (
                format!("{rg}/./providers/Microsoft.Compute/virtualMachines/vm"),
                MappingError::DotSegment(at),
            ),
            (
                format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm/.."),
                MappingError::DotSegment(at + 47),
            ),
            (format!("{rg}/../../other"), MappingError::DotSegment(at)),
            (
                format!(
                    "{SUB}/resourceGroups/rg-app./providers/Microsoft.Compute/virtualMachines/vm"
                ),
                MappingError::TrailingDotOrSpace(SUB.len() + 16),
            ),
            (
                format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm%20"),
                MappingError::TrailingDotOrSpace(at + 44),
            ),
            (
                format!("{rg}/providers/Microsoft.Compute/virtualMachines/a%2Fb"),
                MappingError::EncodedSeparator(at + 45),
            ),
            (
                format!("{rg}/providers/Microsoft.Compute/virtualMachines/a%2fb"),
                MappingError::EncodedSeparator(at + 45),
            ),
            (
                format!("{rg}/providers/Microsoft.Compute/virtualMachines/a%5Cb"),
                MappingError::EncodedSeparator(at + 45),
            ),
            (
                format!("{rg}/providers/Microsoft.Compute/virtualMachines/a\\b"),
                MappingError::Backslash(at + 45),
            ),
            (format!("{rg}/x\0y"), MappingError::ControlCharacter(at + 1)),
            (
                format!("{rg}/x%00y"),
                MappingError::ControlCharacter(at + 1),
            ),
            (format!("{rg}/x\ty"), MappingError::ControlCharacter(at + 1)),
            (
                format!("{rg}/x%0Ay"),
                MappingError::ControlCharacter(at + 1),
            ),
            (
                format!("{rg}/x\u{7f}"),
                MappingError::ControlCharacter(at + 1),
            ),
            (format!("{rg}/caf\u{e9}"), MappingError::NonAscii(at + 3)),
            (format!("{rg}/caf%C3%A9"), MappingError::NonAscii(at + 3)),
            (format!("{rg}/x%G1"), MappingError::BadEscape(at + 1)),
            (format!("{rg}/x%4"), MappingError::BadEscape(at + 1)),
            (format!("{rg}/x%252F"), MappingError::EncodedPercent(at + 1)),
            (
                format!("{rg}/%2E%2E"),
                MappingError::NeedlessEscape { at, character: '.' },
            ),
            (
                format!("{rg}/vm%2d1"),
                MappingError::NeedlessEscape {
                    at: at + 2,
                    character: '-',
                },
            ),
            (
                format!("{rg}/%41"),
                MappingError::NeedlessEscape { at, character: 'A' },
            ),
            (
                format!("{rg}/a b"),
                MappingError::BadCharacter {
                    at: at + 1,
                    character: ' ',
                },
            ),
            (
                format!("{rg}/{{x}}"),
                MappingError::BadCharacter { at, character: '{' },
            ),
            (format!("{rg}/a#b"), MappingError::Fragment(at + 1)),
            ("/".into(), MappingError::NotArm),
            ("/api/orders/17".into(), MappingError::NotArm),
            (
                format!("{rg}/providers"),
                MappingError::ProviderWithoutType(at),
            ),
            (
                format!("{rg}/providers/Microsoft.Compute"),
                MappingError::ProviderWithoutType(at),
            ),
            (
                format!("{}/providers", vm()),
                MappingError::ProviderWithoutType(vm().len() + 1),
            ),
            (
                format!("{}/providers/Microsoft.Insights", vm()),
                MappingError::ProviderWithoutType(vm().len() + 1),
            ),
            (
                format!("{rg}/providers/providers/x/y"),
                MappingError::ProviderWithoutType(at),
            ),
            (
                format!("{rg}/providers/Microsoft.Compute/providers/y"),
                MappingError::ProviderWithoutType(at),
            ),
            (
                "/providers/Microsoft.Management/managementGroups/mg/providers".into(),
                MappingError::ProviderWithoutType(52),
            ),
            (
                format!("{SUB}/tagNames/env/providers/Microsoft.Compute/virtualMachines/vm"),
                MappingError::UnexpectedProviders(SUB.len() + 14),
            ),
        ];
        for (path, error) in cases {
            assert_refused(&path, error);
        }
    }

    #[test]
    fn an_operation_longer_than_the_engine_accepts_is_refused() {
        let mut path = format!("{}/providers/Microsoft.Compute/virtualMachines/vm", rg());
        let child = format!("/{}/n", "t".repeat(100));
        while path.len() + child.len() <= MAX_PATH_LEN {
            path.push_str(&child);
        }
        assert_eq!(
            map(Method::Get, &path).map(|m| m.0),
            Err(MappingError::OperationTooLong)
        );
    }

    #[test]
    fn methods_parse_in_uppercase_only() {
        for method in Method::ALL {
            assert_eq!(Method::parse(method.as_str()), Ok(method));
        }
        for text in ["get", "Get", "OPTIONS", "TRACE", "CONNECT", ""] {
            assert_eq!(
                Method::parse(text),
                Err(MappingError::UnsupportedMethod),
                "{text}"
            );
        }
    }

    #[test]
    fn errors_say_what_is_wrong_and_where() {
        assert_eq!(
            MappingError::EncodedSeparator(12).to_string(),
            "the path has a percent-encoded '/' or '\\' at byte 12"
        );
        assert_eq!(
            MappingError::NeedlessEscape {
                at: 3,
                character: '.'
            }
            .to_string(),
            "the path percent-encodes '.' at byte 3; send it unencoded"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::model::{check_operation, Scope};
    use proptest::prelude::*;

    fn map_owned(path: &str, method: Method) -> Result<(String, String, MappedBy), MappingError> {
        let mut buffer = String::new();
        map_request(&RouteTable::empty(), method, path, &mut buffer)
            .map(|m| (m.operation.to_owned(), m.scope.to_owned(), m.by))
    }

    fn method() -> impl Strategy<Value = Method> {
        prop::sample::select(Method::ALL.to_vec())
    }

    /// Segments ARM paths are made of, plus the troublesome ones.
    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => prop::sample::select(vec![
                "subscriptions", "resourceGroups", "providers", "tenants", "tagNames",
                "Microsoft.Compute", "virtualMachines", "Microsoft.Management",
                "managementGroups", "Microsoft.Authorization", "roleAssignments",
                "Microsoft.Network", "networkWatchers", "nextHop", "restart",
                "00000000-0000-4000-8000-000000000001", "rg-1", "vm-1",
            ]).prop_map(str::to_owned),
            2 => "[a-zA-Z0-9._~()-]{1,8}",
            1 => prop::sample::select(vec![
                "", ".", "..", "%2F", "%2f", "%5C", "%20", "%41", "%25", "%00", "%", "a\\b", "\u{e9}",
            ]).prop_map(str::to_owned),
        ]
    }

    fn arm_like_path() -> impl Strategy<Value = String> {
        (prop::collection::vec(segment(), 0..14), any::<bool>()).prop_map(|(segments, trailing)| {
            let mut path = String::new();
            for s in &segments {
                path.push('/');
                path.push_str(s);
            }
            if path.is_empty() || trailing {
                path.push('/');
            }
            path
        })
    }

    /// Well-formed ARM paths: a scope, providers with type/name pairs
    /// (extensions when there are several), maybe a trailing type or action.
    fn structured_path() -> impl Strategy<Value = String> {
        let prefix = prop::sample::select(vec![
            "/subscriptions/s1",
            "/subscriptions/s1/resourceGroups/rg-1",
            "/providers/Microsoft.Management/managementGroups/mg-1",
            "",
        ]);
        let provider = (
            "Microsoft\\.[A-Za-z]{1,6}",
            prop::collection::vec(("[a-zA-Z]{1,6}", "[a-zA-Z0-9()-]{1,6}"), 1..4),
        );
        (
            prefix,
            prop::collection::vec(provider, 0..3),
            prop::option::of("[a-zA-Z]{1,8}"),
        )
            .prop_map(|(prefix, providers, tail)| {
                let mut path = String::from(prefix);
                for (namespace, pairs) in providers {
                    path.push_str("/providers/");
                    path.push_str(&namespace);
                    for (t, n) in pairs {
                        path.push('/');
                        path.push_str(&t);
                        path.push('/');
                        path.push_str(&n);
                    }
                }
                if path.is_empty() {
                    path.push_str("/subscriptions");
                }
                if let Some(tail) = tail {
                    path.push('/');
                    path.push_str(&tail);
                }
                path
            })
    }

    fn any_path() -> impl Strategy<Value = String> {
        prop_oneof![arm_like_path(), structured_path()]
    }

    /// Flips the case of every ASCII letter outside percent escapes.
    fn flip_case(path: &str, mask: &[bool]) -> String {
        path.chars()
            .enumerate()
            .map(|(i, c)| {
                if mask.get(i % mask.len().max(1)).copied().unwrap_or(false) {
                    if c.is_ascii_lowercase() {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                } else {
                    c
                }
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn random_paths_never_panic(path in any::<String>(), method in method()) {
            let _ = map_owned(&path, method);
        }

        #[test]
        fn arm_like_paths_never_panic_and_map_to_a_scope_prefix_that_parses(
            path in any_path(), method in method()
        ) {
            if let Ok((operation, scope, _)) = map_owned(&path, method) {
                prop_assert!(path.starts_with(&scope), "{} → {}", path, scope);
                prop_assert!(Scope::parse(&scope).is_ok(), "{} → {} which {:?}", path, scope, Scope::parse(&scope).err());
                prop_assert!(check_operation(&operation).is_ok(), "{} → {}", path, operation);
            }
        }

        #[test]
        fn well_formed_arm_paths_always_map(path in structured_path(), method in method()) {
            let mapped = map_owned(&path, method);
            prop_assert!(mapped.is_ok(), "{} → {:?}", path, mapped);
        }

        #[test]
        fn mapping_ignores_ascii_case(
            path in any_path(), method in method(), mask in prop::collection::vec(any::<bool>(), 1..8)
        ) {
            let flipped = flip_case(&path, &mask);
            match (map_owned(&path, method), map_owned(&flipped, method)) {
                (Ok(a), Ok(b)) => {
                    prop_assert!(a.0.eq_ignore_ascii_case(&b.0), "{} vs {}", a.0, b.0);
                    prop_assert!(a.1.eq_ignore_ascii_case(&b.1), "{} vs {}", a.1, b.1);
                    prop_assert_eq!(a.2, b.2);
                }
                (a, b) => prop_assert_eq!(a.err(), b.err(), "{} vs {}", path, flipped),
            }
        }

        #[test]
        fn mapping_ignores_the_query_string(
            path in any_path(), method in method(), query in "[ -~]{0,40}"
        ) {
            let with_query = format!("{path}?{query}");
            prop_assert_eq!(map_owned(&path, method), map_owned(&with_query, method));
        }
    }
}
