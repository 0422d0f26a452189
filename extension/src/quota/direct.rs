//! The common case of `consume_quota` without the executor: lock the quota
//! row, rewrite it, and append the usage event, through the same heap and
//! index calls the executor makes, but without planning or executor start-up
//! for two statements. The way `nextval()` keeps a sequence cheap; measured
//! in docs/BENCHMARKS.md (quota).
//!
//! It only runs where it is exactly equivalent to the SQL statement it
//! replaces (`CONSUME` in mod.rs), which `eligible()` checks against the
//! catalogs once per table version: heap tables; no triggers but the
//! immediate foreign-key checks on usage_quotas (they act only when key
//! columns change, and these never do); no generated columns; every CHECK
//! constraint either untouched by the change (it held for the old row) or one
//! this code enforces itself (`used >= 0`, `used <= hard_limit`, and
//! usage_events' list of event types); immediate unique constraints only.
//! Per call: the known columns, the quota row present with its key unchanged
//! and its period current, a leaf partition without triggers or checks of its
//! own for this instant, and no arithmetic overflow. Anything else returns
//! `Fallback` before a single write, and the caller runs the SQL statement
//! instead.
//! Row-level security is not consulted: the caller is a SECURITY DEFINER
//! function run by the superuser that owns the extension, which bypasses it
//! in the SQL path too.
//!
//! Concurrency follows an UPDATE at the same isolation level: the row found
//! in the caller's snapshot is updated if nobody changed it since; otherwise
//! READ COMMITTED waits for, locks and re-decides on the latest version (as
//! the executor's EvalPlanQual does), and REPEATABLE READ and SERIALIZABLE
//! raise a serialization failure, 40001. The limit is always checked on the
//! version that is written, under its lock, so the hard limit holds under
//! any concurrency; a refusal at READ COMMITTED is decided on the latest
//! version too.

use std::cell::Cell;
use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use pgrx::{IntoDatum, PgSqlErrorCode};

use super::QuotaRow;
use crate::error::raise;

/// What the direct path did.
pub enum Direct {
    /// Counted and logged.
    Counted(QuotaRow),
    /// Over the hard limit, on the row's latest version: nothing was written
    /// (the row stays locked until the (sub)transaction ends).
    Refused(QuotaRow),
    /// Not a case this path handles; nothing was written.
    Fallback,
}

const QUOTA_COLUMNS: [&CStr; 9] = [
    c"workspace_id",
    c"quota_key",
    c"quota_kind",
    c"period_start",
    c"period_end",
    c"used",
    c"limit_value",
    c"hard_limit",
    c"updated_at",
];
const Q_WS: usize = 0;
const Q_KEY: usize = 1;
const Q_KIND: usize = 2;
const Q_START: usize = 3;
const Q_END: usize = 4;
const Q_USED: usize = 5;
const Q_LIMIT: usize = 6;
const Q_HARD: usize = 7;
const Q_UPDATED: usize = 8;

const EVENT_COLUMNS: [&CStr; 9] = [
    c"id",
    c"workspace_id",
    c"quota_key",
    c"event_type",
    c"amount",
    c"idempotency_key",
    c"period_start",
    c"metadata",
    c"occurred_at",
];
const E_ID: usize = 0;
const E_WS: usize = 1;
const E_KEY: usize = 2;
const E_TYPE: usize = 3;
const E_AMOUNT: usize = 4;
const E_IDEM: usize = 5;
const E_START: usize = 6;
const E_META: usize = 7;
const E_AT: usize = 8;

/// What the direct path needs to know about the two tables, looked up once
/// per backend and kept until a relcache invalidation names either table
/// (ALTER, DROP, partitions attached or detached), so DDL is seen at once.
#[derive(Clone, Copy)]
struct Tables {
    quotas: Oid,
    events: Oid,
    /// The catalogs allow the direct path (see `eligible`).
    eligible: bool,
    /// The identity sequence of usage_events.id.
    id_seq: Oid,
}

thread_local! {
    static TABLES: Cell<Option<Tables>> = const { Cell::new(None) };
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_tables(_arg: Datum, relid: Oid) {
    if let Some(t) = TABLES.get() {
        if relid == pg_sys::InvalidOid || relid == t.quotas || relid == t.events {
            TABLES.set(None);
        }
    }
}

/// Count `amount` of `key` for `ws`, logging the event with
/// `idempotency_key`, or say why not.
pub fn consume(ws: pgrx::Uuid, key: &str, amount: i64, idempotency_key: Option<&str>) -> Direct {
    // SAFETY: every pointer below comes from Postgres, for relations opened
    // and locked here and kept open until the end of this call. pgrx turns
    // an ERROR inside a pg_sys call into a panic that unwinds to the function
    // boundary and is raised there; the (sub)transaction abort then releases
    // the relations, snapshots and buffers this call still held.
    unsafe {
        let Some(tables) = tables() else {
            return Direct::Fallback;
        };
        if !tables.eligible {
            return Direct::Fallback;
        }
        let (quotas_oid, events_oid, id_seq) = (tables.quotas, tables.events, tables.id_seq);
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        let now = pg_sys::GetCurrentTransactionStartTimestamp();

        // The event's partition and columns first: nothing is written
        // unless both writes can be made here.
        let events = pg_sys::table_open(events_oid, lock);
        let partition = partition_for(events, now);
        let parent_checks = check_count(events);
        pg_sys::table_close(events, pg_sys::NoLock as _);
        let Some(part_oid) = partition else {
            return Direct::Fallback;
        };
        let part = pg_sys::table_open(part_oid, lock);
        // No triggers, and no CHECK constraints beyond the inherited ones.
        let event_cols = if plain_heap(part, false) && check_count(part) == parent_checks {
            columns(part, &EVENT_COLUMNS, true)
        } else {
            None
        };
        // The partition's indexes, opened now so that one not fit for this
        // path (a deferred unique check) is found before anything is written.
        let part_indexes = event_cols.and_then(|_| Indexes::open(part));
        let (Some(event_cols), Some(part_indexes)) = (event_cols, part_indexes) else {
            pg_sys::table_close(part, pg_sys::NoLock as _);
            return Direct::Fallback;
        };

        let quotas = pg_sys::table_open(quotas_oid, lock);
        let quota_cols = if plain_heap(quotas, true) {
            columns(quotas, &QUOTA_COLUMNS, false)
        } else {
            None
        };
        let result = match quota_cols {
            _ if !pg_sys::ActiveSnapshotSet() => Counted::No(Direct::Fallback),
            None => Counted::No(Direct::Fallback),
            Some(cols) => {
                // The caller's snapshot, made to see this transaction's
                // earlier commands. It may be older than the one SPI would
                // take for the SQL statement (a new one costs 3-4% at 32
                // clients), which is harmless: a row changed since is
                // followed to its latest version before it is counted or
                // refused, and a row inserted since takes the SQL path.
                pg_sys::PushCopiedSnapshot(pg_sys::GetActiveSnapshot());
                pg_sys::UpdateActiveSnapshotCommandId();
                let r = count(quotas, &cols, ws, key, amount, now);
                pg_sys::PopActiveSnapshot();
                r
            }
        };
        let result = match result {
            Counted::Yes(row, period_start) => {
                // Later statements of this transaction see the new row version.
                pg_sys::CommandCounterIncrement();
                log_event(
                    part,
                    &part_indexes,
                    &event_cols,
                    id_seq,
                    ws,
                    key,
                    amount,
                    idempotency_key,
                    period_start,
                    now,
                );
                Direct::Counted(row)
            }
            Counted::No(direct) => direct,
        };
        part_indexes.close();
        pg_sys::table_close(quotas, pg_sys::NoLock as _);
        pg_sys::table_close(part, pg_sys::NoLock as _);
        result
    }
}

/// The two tables, from the cache or looked up.
unsafe fn tables() -> Option<Tables> {
    if !CALLBACK_REGISTERED.get() {
        pg_sys::CacheRegisterRelcacheCallback(Some(forget_tables), Datum::from(0));
        CALLBACK_REGISTERED.set(true);
    }
    // Pending invalidations first (cheap when there are none), so a table
    // dropped or altered since the last call is not used from the cache.
    pg_sys::AcceptInvalidationMessages();
    if let Some(t) = TABLES.get() {
        return Some(t);
    }
    let api = pg_sys::get_namespace_oid(c"api".as_ptr(), true);
    if api == pg_sys::InvalidOid {
        return None;
    }
    let quotas = pg_sys::get_relname_relid(c"usage_quotas".as_ptr(), api);
    let events = pg_sys::get_relname_relid(c"usage_events".as_ptr(), api);
    if quotas == pg_sys::InvalidOid || events == pg_sys::InvalidOid {
        return None;
    }
    let (eligible, id_att) =
        super::with_catalog_search_path(|| (eligible(quotas, events), shape_id_attnum(events)));
    let id_seq = pg_sys::getIdentitySequence(events, id_att?, true);
    if id_seq == pg_sys::InvalidOid {
        return None;
    }
    let t = Tables {
        quotas,
        events,
        eligible,
        id_seq,
    };
    TABLES.set(Some(t));
    Some(t)
}

/// Whether the catalogs allow the direct path: usage_events range-partitioned
/// on occurred_at alone (so a timestamptz comparison picks the partition),
/// and on both tables nothing the direct path would skip (see the module
/// comment). One query, run once per table version.
fn eligible(quotas: Oid, events: Oid) -> bool {
    Spi::get_one_with_args::<bool>(
        r#"SELECT
             (SELECT p.partstrat = 'r' AND p.partnatts = 1 AND a.attname = 'occurred_at'
                     AND a.atttypid = 'timestamptz'::regtype
                     AND p.partclass[0] = (SELECT oc.oid FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
                                            WHERE am.amname = 'btree' AND oc.opcintype = 'timestamptz'::regtype
                                              AND oc.opcdefault)
                FROM pg_partitioned_table p
                JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
               WHERE p.partrelid = $2)
             -- Triggers: none on usage_events; on usage_quotas only
             -- immediate foreign-key checks.
             AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = $2)
             AND NOT EXISTS (SELECT 1 FROM pg_trigger t LEFT JOIN pg_constraint c ON c.oid = t.tgconstraint
                              WHERE t.tgrelid = $1
                                AND NOT coalesce(t.tgisinternal AND c.contype = 'f' AND NOT c.condeferrable
                                                 AND t.tgfoid IN ('"RI_FKey_check_ins"'::regproc,
                                                                  '"RI_FKey_check_upd"'::regproc), false))
             AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                              WHERE a.attrelid IN ($1, $2) AND a.attgenerated <> '' AND NOT a.attisdropped)
             -- Constraints: immediate unique ones; no exclusion constraints,
             -- no foreign keys from usage_events; CHECKs the change cannot
             -- break.
             AND NOT EXISTS (
                   SELECT 1 FROM pg_constraint c
                    WHERE c.conrelid IN ($1, $2)
                      AND CASE c.contype
                            WHEN 'p' THEN c.condeferrable
                            WHEN 'u' THEN c.condeferrable
                            WHEN 'f' THEN c.conrelid = $2 OR c.condeferrable
                            WHEN 'c' THEN
                              CASE WHEN c.conrelid = $1 THEN
                                     -- touched by the change, and not one enforced here
                                     c.conkey && ARRAY(SELECT attnum FROM pg_attribute
                                                        WHERE attrelid = $1 AND attname IN ('used', 'updated_at'))
                                     AND pg_get_constraintdef(c.oid) NOT IN
                                           ('CHECK ((used >= 0))',
                                            'CHECK (((hard_limit IS NULL) OR (used <= hard_limit)))')
                                   ELSE
                                     -- usage_events: only the list of event types
                                     pg_get_constraintdef(c.oid) NOT LIKE 'CHECK ((event_type = ANY (ARRAY[''consumed''::text, %'
                              END
                            ELSE true
                          END)"#,
        &[quotas.into(), events.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

fn shape_id_attnum(events: Oid) -> Option<i16> {
    Spi::get_one_with_args::<i16>(
        "SELECT attnum FROM pg_attribute WHERE attrelid = $1 AND attname = 'id' AND attidentity <> ''",
        &[events.into()],
    )
    .ok()
    .flatten()
}

/// A heap table without triggers, or (with `internal_ok`) only internal ones:
/// which internal ones are allowed is `eligible`'s business.
unsafe fn plain_heap(rel: pg_sys::Relation, internal_ok: bool) -> bool {
    if (*(*rel).rd_rel).relkind != pg_sys::RELKIND_RELATION as std::ffi::c_char
        || (*rel).rd_tableam != pg_sys::GetHeapamTableAmRoutine()
    {
        return false;
    }
    let triggers = (*rel).trigdesc;
    if triggers.is_null() {
        return true;
    }
    internal_ok
        && (0..(*triggers).numtriggers as usize)
            .all(|i| (*(*triggers).triggers.add(i)).tgisinternal)
}

/// How many CHECK constraints `rel` has.
unsafe fn check_count(rel: pg_sys::Relation) -> u16 {
    let constr = (*(*rel).rd_att).constr;
    if constr.is_null() {
        0
    } else {
        (*constr).num_check
    }
}

/// The 0-based positions of `names` in `rel`'s tuple descriptor. With
/// `exact`, every live column must be one of `names`.
unsafe fn columns<const N: usize>(
    rel: pg_sys::Relation,
    names: &[&CStr; N],
    exact: bool,
) -> Option<[usize; N]> {
    let desc = (*rel).rd_att;
    let attrs = (*desc).attrs.as_slice((*desc).natts as usize);
    let mut found = [usize::MAX; N];
    for (pos, att) in attrs.iter().enumerate() {
        if att.attisdropped {
            continue;
        }
        let name = CStr::from_ptr(att.attname.data.as_ptr());
        match names.iter().position(|n| *n == name) {
            Some(i) => found[i] = pos,
            None if exact => return None,
            None => {}
        }
    }
    found.iter().all(|&p| p != usize::MAX).then_some(found)
}

/// The leaf partition of `parent` (range-partitioned on one timestamptz)
/// that takes `at`, as the executor's tuple routing picks it.
unsafe fn partition_for(parent: pg_sys::Relation, at: pg_sys::TimestampTz) -> Option<Oid> {
    if (*(*parent).rd_rel).relkind != pg_sys::RELKIND_PARTITIONED_TABLE as std::ffi::c_char {
        return None;
    }
    // Partitions being detached concurrently are skipped at READ COMMITTED,
    // as tuple routing does (execPartition.c).
    let omit_detached = pg_sys::XactIsoLevel < pg_sys::XACT_REPEATABLE_READ as i32;
    let desc = pg_sys::RelationGetPartitionDesc(parent, omit_detached);
    if desc.is_null() || (*desc).boundinfo.is_null() {
        return None;
    }
    let bounds = (*desc).boundinfo;
    if (*bounds).strategy != pg_sys::PARTITION_STRATEGY_RANGE as std::ffi::c_char {
        return None;
    }
    // indexes[i + 1] is the partition whose range starts at datums[i]; take
    // the greatest bound <= at (none: indexes[0]).
    let mut slot = 0;
    for i in 0..(*bounds).ndatums as usize {
        let kind = *(*(*bounds).kind.add(i));
        let le = match kind {
            pg_sys::PartitionRangeDatumKind::PARTITION_RANGE_DATUM_MINVALUE => true,
            pg_sys::PartitionRangeDatumKind::PARTITION_RANGE_DATUM_MAXVALUE => false,
            _ => (*(*(*bounds).datums.add(i))).value() as i64 <= at,
        };
        if !le {
            break;
        }
        slot = i + 1;
    }
    let mut index = *(*bounds).indexes.add(slot);
    if index < 0 {
        index = (*bounds).default_index;
    }
    if index < 0 || !*(*desc).is_leaf.add(index as usize) {
        return None;
    }
    Some(*(*desc).oids.add(index as usize))
}

/// What `count` did: rewrote the row (with the row's period_start, for the
/// event), or did not write.
enum Counted {
    Yes(QuotaRow, Datum),
    No(Direct),
}

/// Find and rewrite the quota row; `Fallback` before any write when the row
/// is missing or its period is over.
unsafe fn count(
    quotas: pg_sys::Relation,
    cols: &[usize; 9],
    ws: pgrx::Uuid,
    key: &str,
    amount: i64,
    now: pg_sys::TimestampTz,
) -> Counted {
    let slot = pg_sys::table_slot_create(quotas, std::ptr::null_mut());
    let result = if find_row(quotas, cols, ws, key, slot) {
        rewrite(quotas, cols, slot, ws, key, amount, now)
    } else {
        Counted::No(Direct::Fallback)
    };
    pg_sys::ExecDropSingleTupleTableSlot(slot);
    result
}

/// Rewrite the row version in `slot`: try the update at once (the common
/// case: nobody changed the row since the snapshot); when a concurrent
/// transaction did, lock the latest version and decide again on it, as an
/// UPDATE re-checks its WHERE clause (EvalPlanQual) at READ COMMITTED.
#[allow(clippy::too_many_arguments)]
unsafe fn rewrite(
    quotas: pg_sys::Relation,
    cols: &[usize; 9],
    slot: *mut pg_sys::TupleTableSlot,
    ws: pgrx::Uuid,
    key: &str,
    amount: i64,
    now: pg_sys::TimestampTz,
) -> Counted {
    let follow = pg_sys::XactIsoLevel < pg_sys::XACT_REPEATABLE_READ as i32;
    let cid = pg_sys::GetCurrentCommandId(true);
    let mut locked = false;
    loop {
        let desc = (*quotas).rd_att;
        let natts = (*desc).natts as usize;
        pg_sys::slot_getsomeattrs_int(slot, natts as i32);
        let values = std::slice::from_raw_parts((*slot).tts_values, natts);
        let nulls = std::slice::from_raw_parts((*slot).tts_isnull, natts);
        let int = |c: usize| (!nulls[cols[c]]).then(|| values[cols[c]].value() as i64);
        let text = |c: usize| {
            let t = pg_sys::text_to_cstring(values[cols[c]].cast_mut_ptr());
            let owned = CStr::from_ptr(t).to_owned();
            pg_sys::pfree(t.cast());
            owned
        };
        // A version we followed to may belong to another key now (the key
        // catalog renames cascade): the executor re-checks its whole WHERE
        // clause on it, and so does this.
        if locked
            && (pgrx::Uuid::from_datum(values[cols[Q_WS]], false) != Some(ws)
                || text(Q_KEY).to_bytes() != key.as_bytes())
        {
            return Counted::No(Direct::Fallback);
        }
        let period_end = int(Q_END).unwrap_or(i64::MIN);
        if period_end <= now {
            return Counted::No(Direct::Fallback);
        }
        let used = int(Q_USED).unwrap_or(0);
        let limit_value = int(Q_LIMIT);
        let hard_limit = int(Q_HARD);
        let kind_is_gauge = text(Q_KIND).as_c_str() == c"gauge";
        let period_end = TimestampWithTimeZone::try_from(period_end).expect("checked finite");
        // Out of range: the SQL path raises 22003 as `used + amount` does.
        let Some(new_used) = used.checked_add(amount) else {
            return Counted::No(Direct::Fallback);
        };
        let row = QuotaRow {
            used: new_used,
            limit_value,
            hard_limit,
            period_end,
            crossed: limit_value.is_some_and(|l| used < l && new_used >= l),
            resets: !kind_is_gauge,
        };
        if hard_limit.is_some_and(|h| new_used > h) {
            // Refuse on the latest version only, not on a snapshot's: room
            // may have been freed since (at READ COMMITTED).
            if follow && !locked {
                let mut tid = (*slot).tts_tid;
                if !lock_latest(quotas, slot, cid, &mut tid) {
                    return Counted::No(Direct::Fallback);
                }
                locked = true;
                continue;
            }
            return Counted::No(Direct::Refused(QuotaRow {
                used,
                crossed: false,
                ..row
            }));
        }
        // period_start goes on the event (a timestamptz is passed by value).
        let period_start = values[cols[Q_START]];

        let mut new_values = values.to_vec();
        let mut new_nulls = nulls.to_vec();
        new_values[cols[Q_USED]] = Datum::from(new_used);
        new_nulls[cols[Q_USED]] = false;
        new_values[cols[Q_UPDATED]] = Datum::from(now);
        new_nulls[cols[Q_UPDATED]] = false;
        let tuple = pg_sys::heap_form_tuple(desc, new_values.as_mut_ptr(), new_nulls.as_mut_ptr());
        let mut tid = (*slot).tts_tid;
        let updated = if locked {
            // We hold the lock on this latest version: nobody can change it.
            pg_sys::simple_heap_update(quotas, &mut tid, tuple);
            pg_sys::TM_Result::TM_Ok
        } else {
            let mut tmfd: pg_sys::TM_FailureData = std::mem::zeroed();
            let mut lockmode = pg_sys::LockTupleMode::LockTupleNoKeyExclusive;
            pg_sys::heap_update(
                quotas,
                &mut tid,
                tuple,
                cid,
                std::ptr::null_mut(),
                true,
                &mut tmfd,
                &mut lockmode,
            )
        };
        match updated {
            pg_sys::TM_Result::TM_Ok => {
                if (*(*tuple).t_data).t_infomask2 & pg_sys::HEAP_ONLY_TUPLE as u16 == 0 {
                    // Not HOT: every index needs an entry for the new version.
                    // Which columns changed is a hint for btree's bottom-up
                    // deletion, as the executor gives it.
                    let changed = [cols[Q_USED] as i16 + 1, cols[Q_UPDATED] as i16 + 1];
                    let indexes = Indexes::open_all(quotas);
                    indexes.insert(quotas, tuple, Some(&changed));
                    indexes.close();
                }
                return Counted::Yes(row, period_start);
            }
            pg_sys::TM_Result::TM_Updated | pg_sys::TM_Result::TM_Deleted if !follow => {
                serialization_failure()
            }
            pg_sys::TM_Result::TM_Updated => {
                if !lock_latest(quotas, slot, cid, &mut tid) {
                    return Counted::No(Direct::Fallback);
                }
                locked = true;
            }
            // Deleted meanwhile, or changed by this very statement: the SQL
            // path decides (it opens a new period or reports the state).
            _ => return Counted::No(Direct::Fallback),
        }
    }
}

/// Lock the latest version of the row at `tid` into `slot`, waiting for
/// concurrent writers (READ COMMITTED only).
unsafe fn lock_latest(
    quotas: pg_sys::Relation,
    slot: *mut pg_sys::TupleTableSlot,
    cid: pg_sys::CommandId,
    tid: &mut pg_sys::ItemPointerData,
) -> bool {
    let mut tmfd: pg_sys::TM_FailureData = std::mem::zeroed();
    // pgrx's guarded wrapper: an ERROR while waiting (deadlock, lock or
    // statement timeout, cancel) unwinds as a panic, not a longjmp.
    pg_sys::table_tuple_lock(
        quotas,
        tid,
        pg_sys::GetActiveSnapshot(),
        slot,
        cid,
        pg_sys::LockTupleMode::LockTupleNoKeyExclusive,
        pg_sys::LockWaitPolicy::LockWaitBlock,
        pg_sys::TUPLE_LOCK_FLAG_FIND_LAST_VERSION as u8,
        &mut tmfd,
    ) == pg_sys::TM_Result::TM_Ok
}

fn serialization_failure() -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
        "could not serialize access due to concurrent update",
        Some("The workspace's quota row was changed by a concurrent transaction.".into()),
        "Retry the transaction.",
    )
}

/// Fetch the row of (ws, key) visible to the active snapshot into `slot`,
/// through the primary key (workspace_id, quota_key).
unsafe fn find_row(
    quotas: pg_sys::Relation,
    cols: &[usize; 9],
    ws: pgrx::Uuid,
    key: &str,
    slot: *mut pg_sys::TupleTableSlot,
) -> bool {
    pg_sys::list_free(pg_sys::RelationGetIndexList(quotas)); // fills rd_pkindex
    let pk = (*quotas).rd_pkindex;
    if pk == pg_sys::InvalidOid {
        return false;
    }
    let index = pg_sys::index_open(pk, pg_sys::AccessShareLock as _);
    let form = (*index).rd_index;
    let keys = (*form).indkey.values.as_slice((*form).indnatts as usize);
    let ws_att = (cols[Q_WS] + 1) as i16;
    let key_att = (cols[Q_KEY] + 1) as i16;
    let matches = keys == [ws_att, key_att];
    let collation = if matches {
        *(*index).rd_indcollation.add(1)
    } else {
        pg_sys::InvalidOid
    };
    pg_sys::index_close(index, pg_sys::NoLock as _);
    if !matches {
        return false;
    }
    let mut scan_keys: [pg_sys::ScanKeyData; 2] = std::mem::zeroed();
    pg_sys::ScanKeyEntryInitialize(
        &mut scan_keys[0],
        0,
        ws_att,
        pg_sys::BTEqualStrategyNumber as u16,
        pg_sys::InvalidOid,
        pg_sys::InvalidOid,
        pg_sys::Oid::from(pg_sys::F_UUID_EQ),
        ws.into_datum().expect("a uuid datum"),
    );
    pg_sys::ScanKeyEntryInitialize(
        &mut scan_keys[1],
        0,
        key_att,
        pg_sys::BTEqualStrategyNumber as u16,
        pg_sys::InvalidOid,
        collation,
        pg_sys::Oid::from(pg_sys::F_TEXTEQ),
        key.into_datum().expect("a text datum"),
    );
    let scan = pg_sys::systable_beginscan(
        quotas,
        pk,
        true,
        pg_sys::GetActiveSnapshot(),
        2,
        scan_keys.as_mut_ptr(),
    );
    let tuple = pg_sys::systable_getnext(scan);
    let found = !tuple.is_null();
    if found {
        pg_sys::ExecForceStoreHeapTuple(tuple, slot, false);
        (*slot).tts_tid = (*tuple).t_self;
        (*slot).tts_tableOid = (*tuple).t_tableOid;
    }
    pg_sys::systable_endscan(scan);
    found
}

/// Append the usage event to its partition.
#[allow(clippy::too_many_arguments)]
unsafe fn log_event(
    part: pg_sys::Relation,
    indexes: &Indexes,
    cols: &[usize; 9],
    id_seq: Oid,
    ws: pgrx::Uuid,
    key: &str,
    amount: i64,
    idempotency_key: Option<&str>,
    period_start: Datum,
    now: pg_sys::TimestampTz,
) {
    let desc = (*part).rd_att;
    let natts = (*desc).natts as usize;
    let mut values = vec![Datum::from(0); natts];
    let mut nulls = vec![true; natts];
    let mut set = |c: usize, d: Option<Datum>| {
        if let Some(d) = d {
            values[cols[c]] = d;
            nulls[cols[c]] = false;
        }
    };
    let id = pgrx::direct_function_call::<i64>(pg_sys::nextval_oid, &[id_seq.into_datum()]);
    set(E_ID, id.into_datum());
    set(E_WS, ws.into_datum());
    set(E_KEY, key.into_datum());
    set(E_TYPE, "consumed".into_datum());
    set(E_AMOUNT, amount.into_datum());
    set(E_IDEM, idempotency_key.and_then(|k| k.into_datum()));
    set(E_START, Some(period_start));
    set(
        E_META,
        pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(Datum::from(c"{}".as_ptr()))]),
    );
    set(E_AT, Some(Datum::from(now)));
    let tuple = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
    pg_sys::simple_heap_insert(part, tuple);
    indexes.insert(part, tuple, None);
}

/// The indexes of a table, open with the IndexInfo the executor would build.
struct Indexes(Vec<(pg_sys::Relation, *mut pg_sys::IndexInfo)>);

impl Indexes {
    /// Every index of `rel`.
    unsafe fn open_all(rel: pg_sys::Relation) -> Indexes {
        let list = pg_sys::RelationGetIndexList(rel);
        let oids: Vec<Oid> = if list.is_null() {
            Vec::new()
        } else {
            (0..(*list).length as usize)
                .map(|i| (*(*list).elements.add(i)).oid_value)
                .collect()
        };
        pg_sys::list_free(list);
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        Indexes(
            oids.into_iter()
                .map(|oid| {
                    let index = pg_sys::index_open(oid, lock);
                    (index, pg_sys::BuildIndexInfo(index))
                })
                .collect(),
        )
    }

    /// Every index of `rel`, or None (and nothing open) when one checks
    /// uniqueness only at commit: its recheck would need an after-trigger.
    unsafe fn open(rel: pg_sys::Relation) -> Option<Indexes> {
        let indexes = Indexes::open_all(rel);
        if indexes
            .0
            .iter()
            .all(|&(index, _)| (*(*index).rd_index).indimmediate)
        {
            Some(indexes)
        } else {
            indexes.close();
            None
        }
    }

    /// Entries for a new heap tuple of `rel` in every index ready for
    /// inserts (an index being built concurrently is not yet), as the
    /// executor makes them. `changed`: for an update, the attribute numbers
    /// it changed. Plain column indexes are filled here; one with
    /// expressions, a predicate or an exclusion constraint goes through the
    /// executor's own routine.
    unsafe fn insert(
        &self,
        rel: pg_sys::Relation,
        tuple: pg_sys::HeapTuple,
        changed: Option<&[i16]>,
    ) {
        let slot = pg_sys::MakeSingleTupleTableSlot((*rel).rd_att, &pg_sys::TTSOpsHeapTuple);
        pg_sys::ExecStoreHeapTuple(tuple, slot, false);
        let plain = self.0.iter().all(|&(_, info)| {
            (*info).ii_Expressions.is_null()
                && (*info).ii_Predicate.is_null()
                && (*info).ii_ExclusionOps.is_null()
        });
        if plain {
            let mut values = [Datum::from(0); pg_sys::INDEX_MAX_KEYS as usize];
            let mut nulls = [false; pg_sys::INDEX_MAX_KEYS as usize];
            for &(index, info) in &self.0 {
                if !(*info).ii_ReadyForInserts {
                    continue;
                }
                pg_sys::FormIndexDatum(
                    info,
                    slot,
                    std::ptr::null_mut(),
                    values.as_mut_ptr(),
                    nulls.as_mut_ptr(),
                );
                let check = if (*(*index).rd_index).indisunique {
                    pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES
                } else {
                    pg_sys::IndexUniqueCheck::UNIQUE_CHECK_NO
                };
                let keys = (*info).ii_IndexAttrNumbers;
                let unchanged = changed.is_some_and(|changed| {
                    keys[..(*info).ii_NumIndexAttrs as usize]
                        .iter()
                        .all(|k| !changed.contains(k))
                });
                pg_sys::index_insert(
                    index,
                    values.as_mut_ptr(),
                    nulls.as_mut_ptr(),
                    &mut (*tuple).t_self,
                    rel,
                    check,
                    unchanged,
                    info,
                );
            }
        } else {
            let estate = pg_sys::CreateExecutorState();
            let info = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>())
                .cast::<pg_sys::ResultRelInfo>();
            (*info).type_ = pg_sys::NodeTag::T_ResultRelInfo;
            pg_sys::InitResultRelInfo(info, rel, 0, std::ptr::null_mut(), 0);
            pg_sys::ExecOpenIndices(info, false);
            pg_sys::ExecInsertIndexTuples(
                info,
                slot,
                estate,
                false, // the unchanged-index hint needs a range table; leave it off
                false,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
            pg_sys::ExecCloseIndices(info);
            pg_sys::FreeExecutorState(estate);
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
    }

    unsafe fn close(self) {
        for (index, _) in self.0 {
            pg_sys::index_close(index, pg_sys::NoLock as _);
        }
    }
}
