//! Table items ⇄ records: the record carrying an item's current value (times turned into
//! ages of the sender's clock), and what a received record asks of the tables (ages turned
//! back into times of this member's clock).

use crate::tables::{
    CertEntry, ConnEntry, ConnKey, Expectation, GatewayStatus, HostEntry, IkeSa, ItemKey, KConn,
    KExp, Millis, SyncedItem, Tables, UserEntry,
};

use super::wire::{BulkBegin, Record};

/// The record of a connection's current value.
pub fn conn_record(k: &ConnKey, e: &ConnEntry, now: Millis) -> Record {
    Record::Conn {
        key: *k,
        state: e.state,
        flags: e.flags,
        rule: e.rule,
        age: now.saturating_sub(e.created),
        idle: now.saturating_sub(e.last_seen),
    }
}

/// The record carrying an item's current value, or its removal when absent. `None` for an
/// absent item in a bulk (`bulk`), or a connection that must not be synced.
pub fn item_record(t: &Tables, key: &ItemKey, now: Millis, bulk: bool) -> Option<Record> {
    let left = |at: Millis| at.saturating_sub(now);
    let ago = |at: Millis| now.saturating_sub(at);
    let r = match key {
        ItemKey::Conn(k) => match t.conn_peek(k) {
            Some(e) if e.syncable() => conn_record(k, e, now),
            Some(_) => return None,
            None => Record::DelConn(*k),
        },
        ItemKey::Host(k) => match t.hosts().get(k) {
            Some(e) => Record::Host(*k, e.mac, ago(e.last_seen)),
            None => Record::DelHost(*k),
        },
        ItemKey::User(k) => match t.users().get(k) {
            Some(e) => Record::User(*k, e.name.clone(), e.groups.clone(), left(e.expires)),
            None => Record::DelUser(*k),
        },
        ItemKey::Expect(k) => match t.expects().get(k) {
            Some(e) => Record::Expect(*k, e.helper, e.master, left(e.expires)),
            None => Record::DelExpect(*k),
        },
        ItemKey::Gateway(k) => match t.gateways().get(k) {
            Some(e) => Record::Gateway(*k, e.up, ago(e.since)),
            None => Record::DelGateway(*k),
        },
        ItemKey::Cert(k) => match t.certs().get(k) {
            Some(e) => Record::Cert(k.clone(), e.status),
            None => Record::DelCert(k.clone()),
        },
        ItemKey::Ike(k) => match t.ike_sa(k) {
            Some(s) => Record::Ike(
                *k,
                s.peer,
                s.msg_id_out,
                s.msg_id_in,
                s.esp_seq_out,
                s.esp_seq_in,
            ),
            None => Record::DelIke(*k),
        },
        ItemKey::KernelConn(k) => match t.kernel_conns().get(k) {
            Some(e) => match e.seq_adj {
                None => Record::KernelConn {
                    key: *k,
                    reply: e.reply,
                    status: e.status,
                    mark: e.mark,
                    tcp: e.tcp,
                    left: left(e.expires),
                    helper: e.helper,
                },
                Some(seq_adj) => Record::KernelConnAdjusted {
                    key: *k,
                    reply: e.reply,
                    status: e.status,
                    mark: e.mark,
                    tcp: e.tcp,
                    left: left(e.expires),
                    helper: e.helper,
                    seq_adj,
                },
            },
            None => Record::DelKernelConn(*k),
        },
        ItemKey::KernelExpect(k) => match t.kernel_expects().get(k) {
            Some(e) => match e.nat {
                None => Record::KernelExpect {
                    key: *k,
                    master: e.master,
                    mask_src: e.mask_src,
                    mask_port: e.mask_port,
                    flags: e.flags,
                    class: e.class,
                    left: left(e.expires),
                },
                Some(nat) => Record::KernelExpectNat {
                    key: *k,
                    master: e.master,
                    mask_src: e.mask_src,
                    mask_port: e.mask_port,
                    flags: e.flags,
                    class: e.class,
                    left: left(e.expires),
                    nat,
                },
            },
            None => Record::DelKernelExpect(*k),
        },
    };
    if bulk && r.is_removal() {
        return None;
    }
    Some(r)
}

/// What a received record asks for.
#[derive(Debug)]
pub enum Change {
    /// Install (or refresh) an item.
    Install(SyncedItem),
    /// Remove an item.
    Remove(ItemKey),
    /// A bulk synchronization begins.
    BulkBegin(BulkBegin),
    /// A bulk synchronization ends.
    BulkEnd {
        /// Request id.
        id: u32,
    },
}

/// The change a record asks for, with its ages turned into times of this member's clock
/// `now`. The item's `gen` is left at 0: the tables set it when installing.
pub fn change_of(rec: Record, now: Millis) -> Change {
    let back = |ms: u64| now.saturating_sub(ms);
    let ahead = |ms: u64| now.saturating_add(ms);
    let item = match rec {
        Record::Conn {
            key,
            state,
            flags,
            rule,
            age,
            idle,
        } => SyncedItem::Conn(
            key,
            ConnEntry {
                state,
                flags,
                gen: 0,
                rule,
                created: back(age),
                last_seen: back(idle),
                packets: [0; 2],
                bytes: [0; 2],
            },
        ),
        Record::Host(k, mac, idle) => SyncedItem::Host(
            k,
            HostEntry {
                mac,
                last_seen: back(idle),
                gen: 0,
            },
        ),
        Record::User(k, name, groups, left) => SyncedItem::User(
            k,
            UserEntry {
                name,
                groups,
                expires: ahead(left),
                gen: 0,
            },
        ),
        Record::Expect(k, helper, master, left) => SyncedItem::Expect(
            k,
            Expectation {
                helper,
                master,
                expires: ahead(left),
                gen: 0,
            },
        ),
        Record::Gateway(k, up, age) => SyncedItem::Gateway(
            k,
            GatewayStatus {
                up,
                since: back(age),
                gen: 0,
            },
        ),
        Record::Cert(k, status) => SyncedItem::Cert(k, CertEntry { status, gen: 0 }),
        Record::Ike(k, peer, mo, mi, so, si) => SyncedItem::Ike(
            k,
            IkeSa {
                peer,
                msg_id_out: mo,
                msg_id_in: mi,
                esp_seq_out: so,
                esp_seq_in: si,
                gen: 0,
            },
        ),
        Record::KernelConn {
            key,
            reply,
            status,
            mark,
            tcp,
            left,
            helper,
        } => SyncedItem::KernelConn(
            key,
            KConn {
                reply,
                status,
                mark,
                tcp,
                helper,
                seq_adj: None,
                expires: ahead(left),
                gen: 0,
            },
        ),
        Record::KernelConnAdjusted {
            key,
            reply,
            status,
            mark,
            tcp,
            left,
            helper,
            seq_adj,
        } => SyncedItem::KernelConn(
            key,
            KConn {
                reply,
                status,
                mark,
                tcp,
                helper,
                seq_adj: Some(seq_adj),
                expires: ahead(left),
                gen: 0,
            },
        ),
        Record::KernelExpect {
            key,
            master,
            mask_src,
            mask_port,
            flags,
            class,
            left,
        } => SyncedItem::KernelExpect(
            key,
            KExp {
                master,
                mask_src,
                mask_port,
                flags,
                class,
                nat: None,
                expires: ahead(left),
                gen: 0,
            },
        ),
        Record::KernelExpectNat {
            key,
            master,
            mask_src,
            mask_port,
            flags,
            class,
            left,
            nat,
        } => SyncedItem::KernelExpect(
            key,
            KExp {
                master,
                mask_src,
                mask_port,
                flags,
                class,
                nat: Some(nat),
                expires: ahead(left),
                gen: 0,
            },
        ),
        Record::DelConn(k) => return Change::Remove(ItemKey::Conn(k)),
        Record::DelHost(k) => return Change::Remove(ItemKey::Host(k)),
        Record::DelUser(k) => return Change::Remove(ItemKey::User(k)),
        Record::DelExpect(k) => return Change::Remove(ItemKey::Expect(k)),
        Record::DelGateway(k) => return Change::Remove(ItemKey::Gateway(k)),
        Record::DelCert(k) => return Change::Remove(ItemKey::Cert(k)),
        Record::DelIke(k) => return Change::Remove(ItemKey::Ike(k)),
        Record::DelKernelConn(k) => return Change::Remove(ItemKey::KernelConn(k)),
        Record::DelKernelExpect(k) => return Change::Remove(ItemKey::KernelExpect(k)),
        Record::BulkBegin(b) => return Change::BulkBegin(b),
        Record::BulkEnd { id, .. } => return Change::BulkEnd { id },
    };
    Change::Install(item)
}
