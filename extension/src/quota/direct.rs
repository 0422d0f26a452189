//! The common case of `consume_quota` without the executor: lock the quota
//! row, rewrite it, and append the usage event, through the same heap and
//! index calls the executor makes, but without planning or executor start-up
//! for two statements. The way `nextval()` keeps a sequence cheap; measured
//! in docs/BENCHMARKS.md (quota).
//!
//! It only runs where it is exactly equivalent to the SQL statement it
//! replaces (`CONSUME` in mod.rs): both tables are plain heap tables with no
//! triggers of their own (the internal foreign-key triggers on usage_quotas
//! only act when key columns change, and these never do), the columns are the
//! known ones, the quota row exists and its period is current, and a leaf
//! partition takes events at this instant. Anything else returns `Fallback`
//! before a single write, and the caller runs the SQL statement instead.
//! Row-level security is not consulted: the caller is a SECURITY DEFINER
//! function run by the superuser that owns the extension, which bypasses it
//! in the SQL path too.
//!
//! Concurrency follows an UPDATE at the same isolation level: the row found
//! in the statement's snapshot is locked in its latest version (READ COMMITTED waits
//! for and follows concurrent updates; REPEATABLE READ and SERIALIZABLE raise
//! a serialization failure, 40001), and the limit is checked on that latest
//! version while the lock is held, so the hard limit holds under any
//! concurrency.

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
    /// Over the hard limit: nothing was written (the row stays locked until
    /// the transaction or subtransaction ends, as a refused caller's does).
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
    /// usage_events is range-partitioned on occurred_at alone, so a
    /// timestamptz comparison picks its partition.
    partitioned: bool,
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
        if !tables.partitioned {
            return Direct::Fallback;
        }
        let (quotas_oid, events_oid, id_seq) = (tables.quotas, tables.events, tables.id_seq);
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        let now = pg_sys::GetCurrentTransactionStartTimestamp();

        // The event's partition and columns first: nothing is written
        // unless both writes can be made here.
        let events = pg_sys::table_open(events_oid, lock);
        let partition = partition_for(events, now);
        pg_sys::table_close(events, pg_sys::NoLock as _);
        let Some(part_oid) = partition else {
            return Direct::Fallback;
        };
        let part = pg_sys::table_open(part_oid, lock);
        let event_cols = if plain_heap(part) {
            columns(part, &EVENT_COLUMNS, true)
        } else {
            None
        };
        let Some(event_cols) = event_cols else {
            pg_sys::table_close(part, pg_sys::NoLock as _);
            return Direct::Fallback;
        };

        let quotas = pg_sys::table_open(quotas_oid, lock);
        let quota_cols = if plain_heap(quotas) {
            columns(quotas, &QUOTA_COLUMNS, false)
        } else {
            None
        };
        let snapshot = pg_sys::GetActiveSnapshot();
        let result = match quota_cols {
            _ if snapshot.is_null() => Counted::No(Direct::Fallback),
            None => Counted::No(Direct::Fallback),
            Some(cols) => {
                // The statement's snapshot, seeing this transaction's earlier
                // commands: a row changed since is followed to its latest
                // version, a row inserted since takes the SQL path.
                pg_sys::PushCopiedSnapshot(snapshot);
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
    let (partitioned, id_att) =
        super::with_catalog_search_path(|| (shape_partitioned(events), shape_id_attnum(events)));
    let id_seq = pg_sys::getIdentitySequence(events, id_att?, true);
    if id_seq == pg_sys::InvalidOid {
        return None;
    }
    let t = Tables {
        quotas,
        events,
        partitioned,
        id_seq,
    };
    TABLES.set(Some(t));
    Some(t)
}

fn shape_partitioned(events: Oid) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT p.partstrat = 'r' AND p.partnatts = 1 AND a.attname = 'occurred_at'
                AND a.atttypid = 'timestamptz'::regtype
                AND p.partclass[0] = (SELECT oc.oid FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
                                       WHERE am.amname = 'btree' AND oc.opcintype = 'timestamptz'::regtype
                                         AND oc.opcdefault)
           FROM pg_partitioned_table p
           JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
          WHERE p.partrelid = $1",
        &[events.into()],
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

/// A heap table without triggers of its own (only internal ones, such as
/// foreign-key checks).
unsafe fn plain_heap(rel: pg_sys::Relation) -> bool {
    if (*(*rel).rd_rel).relkind != pg_sys::RELKIND_RELATION as std::ffi::c_char
        || (*rel).rd_tableam != pg_sys::GetHeapamTableAmRoutine()
    {
        return false;
    }
    let triggers = (*rel).trigdesc;
    if triggers.is_null() {
        return true;
    }
    (0..(*triggers).numtriggers as usize).all(|i| (*(*triggers).triggers.add(i)).tgisinternal)
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
    let desc = pg_sys::RelationGetPartitionDesc(parent, false);
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
        rewrite(quotas, cols, slot, amount, now)
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
unsafe fn rewrite(
    quotas: pg_sys::Relation,
    cols: &[usize; 9],
    slot: *mut pg_sys::TupleTableSlot,
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
        let period_end = int(Q_END).unwrap_or(i64::MIN);
        if period_end <= now {
            return Counted::No(Direct::Fallback);
        }
        let used = int(Q_USED).unwrap_or(0);
        let limit_value = int(Q_LIMIT);
        let hard_limit = int(Q_HARD);
        let kind_is_gauge = {
            let k = pg_sys::text_to_cstring(values[cols[Q_KIND]].cast_mut_ptr());
            let gauge = CStr::from_ptr(k) == c"gauge";
            pg_sys::pfree(k.cast());
            gauge
        };
        let period_end = TimestampWithTimeZone::try_from(period_end).expect("checked finite");
        let new_used = used + amount;
        let row = QuotaRow {
            used: new_used,
            limit_value,
            hard_limit,
            period_end,
            crossed: limit_value.is_some_and(|l| used < l && new_used >= l),
            resets: !kind_is_gauge,
        };
        if hard_limit.is_some_and(|h| new_used > h) {
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
                    insert_index_entries(quotas, tuple);
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
    let lock_tuple = (*(*quotas).rd_tableam)
        .tuple_lock
        .expect("heap tables can lock tuples");
    lock_tuple(
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
    insert_index_entries(part, tuple);
}

/// Index entries for a new heap tuple in every index of `rel`, as the
/// executor makes them. Plain column indexes are filled here directly; an
/// index with expressions, a predicate, an exclusion constraint or a
/// deferred unique check takes the executor's own routine instead.
unsafe fn insert_index_entries(rel: pg_sys::Relation, tuple: pg_sys::HeapTuple) {
    let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
    let list = pg_sys::RelationGetIndexList(rel);
    let oids: Vec<Oid> = if list.is_null() {
        Vec::new()
    } else {
        (0..(*list).length as usize)
            .map(|i| (*(*list).elements.add(i)).oid_value)
            .collect()
    };
    pg_sys::list_free(list);
    let slot = pg_sys::MakeSingleTupleTableSlot((*rel).rd_att, &pg_sys::TTSOpsHeapTuple);
    pg_sys::ExecStoreHeapTuple(tuple, slot, false);
    let mut opened = Vec::with_capacity(oids.len());
    for oid in oids {
        let index = pg_sys::index_open(oid, lock);
        opened.push((index, pg_sys::BuildIndexInfo(index)));
    }
    let plain = opened.iter().all(|&(index, info)| {
        (*info).ii_Expressions.is_null()
            && (*info).ii_Predicate.is_null()
            && (*info).ii_ExclusionOps.is_null()
            && (*(*index).rd_index).indimmediate
    });
    if plain {
        let mut values = [Datum::from(0); pg_sys::INDEX_MAX_KEYS as usize];
        let mut nulls = [false; pg_sys::INDEX_MAX_KEYS as usize];
        for &(index, info) in &opened {
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
            pg_sys::index_insert(
                index,
                values.as_mut_ptr(),
                nulls.as_mut_ptr(),
                &mut (*tuple).t_self,
                rel,
                check,
                false,
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
            false,
            false,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        pg_sys::ExecCloseIndices(info);
        pg_sys::FreeExecutorState(estate);
    }
    for (index, _) in opened {
        pg_sys::index_close(index, pg_sys::NoLock as _);
    }
    pg_sys::ExecDropSingleTupleTableSlot(slot);
}
