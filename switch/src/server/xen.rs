//! The server's xenstore transport: app domains in Xen guests attach through the handshake
//! of [`crate::xen_ctl`] instead of the control socket, and their ports join the switch
//! through the same [`Control::add_app`] as the socket's apps.
//!
//! The control thread polls [`Xenstore::event_fd`] beside its other descriptors. Watch
//! events are coalesced per domain; every domain is rescanned once a second, so an event
//! lost to a flooding domain only delays another's handshake. Nothing a domain writes is
//! trusted: [`crate::xen_ctl`] parses every field, the hypervisor refuses references that
//! are not grants to this domain, and the port header is validated against the limits and
//! the mapping's size. A refusal touches only that domain's backend directory.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grant_pool::{Access, DomId, GrantBackend, GrantRef, PoolId};
use pmd::Mac;

use super::{AppEntry, Control, check_free};
use crate::app_port::AppCounters;
use crate::forward::PortId;
use crate::xen_ctl::{
    Backend, RefList, XbState, XenCtlError, fmt_mac, frontend_names, frontend_state, read_hello,
};
use crate::xenstore::Xenstore;

/// How often every domain is rescanned without an event.
const RESCAN: Duration = Duration::from_secs(1);

/// Domains handled per round (each costs a few xenstore round trips).
const PER_ROUND: usize = 64;

/// What the rest of the control thread needs to know of the Xen apps.
#[derive(Debug, Default)]
pub(super) struct View {
    /// Names and MACs of attached and handshaking Xen apps.
    pub taken: Vec<(String, Mac)>,
    /// Counters of attached Xen apps.
    pub counters: Vec<(PortId, Arc<AppCounters>)>,
}

enum App<N> {
    /// Hello answered with `pool` (reserved until the app attaches or leaves).
    Hello {
        pool: PoolId,
        name: String,
        mac: Mac,
    },
    /// On the switch.
    Attached(AppEntry<N>),
}

/// The xenstore side of the control thread.
pub(super) struct XenSide<N> {
    xs: Xenstore,
    me: u16,
    max_refs: usize,
    allowed: Vec<(String, Option<Mac>)>,
    /// Keyed by (domain, app name).
    apps: BTreeMap<(u16, String), App<N>>,
    watched: BTreeSet<u16>,
    last_scan: Option<Instant>,
}

impl<N> XenSide<N> {
    /// Connects to xenstore and watches domains come and go.
    pub fn open(
        me: u16,
        max_refs: usize,
        allowed: Vec<(String, Option<Mac>)>,
    ) -> Result<Self, XenCtlError> {
        let xs = Xenstore::open()?;
        let s = Self {
            xs,
            me,
            max_refs,
            allowed,
            apps: BTreeMap::new(),
            watched: BTreeSet::new(),
            last_scan: None,
        };
        s.backend(0).watch_domains()?;
        Ok(s)
    }

    fn backend(&self, instance: u64) -> Backend<'_> {
        Backend::new(&self.xs, self.me, instance, self.max_refs)
    }

    /// The descriptor to poll for watch events.
    pub fn event_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.xs.event_fd()
    }

    /// Names, MACs and counters of the Xen apps.
    pub fn view(&self) -> View {
        let mut v = View::default();
        for a in self.apps.values() {
            match a {
                App::Hello { name, mac, .. } => v.taken.push((name.clone(), *mac)),
                App::Attached(e) => {
                    v.taken.push((e.name.clone(), e.mac));
                    v.counters.push((e.id, e.counters.clone()));
                }
            }
        }
        v
    }

    /// Whether the periodic rescan is due.
    pub fn rescan_due(&self) -> bool {
        self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN)
    }
}

impl<N: grant_pool::Notifier + 'static> XenSide<N> {
    /// Handles what changed in xenstore: watch events (coalesced) and, once a second, every
    /// domain.
    pub fn service<B>(&mut self, ctl: &mut Control<B>, socket_taken: &[(String, Mac)])
    where
        B: GrantBackend<Notifier = N>,
        B::Mapping: 'static,
    {
        self.xs.clear_event_signal();
        let instance = ctl.instance;
        let (mut dirty, domains) = match self.backend(instance).poll(Duration::ZERO) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("xenstore: {e}");
                return;
            }
        };
        if domains || self.rescan_due() {
            self.last_scan = Some(Instant::now());
            match self.backend(instance).domains() {
                Ok(doms) => {
                    for &d in &doms {
                        if self.watched.insert(d) {
                            let _ = self.backend(instance).watch_app(d);
                        }
                        dirty.insert(d);
                    }
                    let gone: Vec<(u16, String)> = self
                        .apps
                        .keys()
                        .filter(|(d, _)| !doms.contains(d))
                        .cloned()
                        .collect();
                    for k in gone {
                        self.drop_app(ctl, &k, "its domain is gone");
                    }
                    let gone: Vec<u16> = self
                        .watched
                        .iter()
                        .filter(|d| !doms.contains(d))
                        .copied()
                        .collect();
                    for d in gone {
                        self.watched.remove(&d);
                        let _ = self.backend(instance).unwatch_app(d);
                        let _ = self.backend(instance).forget_domain(d);
                    }
                }
                Err(e) => tracing::warn!("xenstore: listing domains: {e}"),
            }
        }
        for d in dirty.into_iter().take(PER_ROUND) {
            let names = match frontend_names(&self.xs, d) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(domain = d, "xenstore: {e}");
                    continue;
                }
            };
            // Apps whose directory went away left.
            let left: Vec<(u16, String)> = self
                .apps
                .keys()
                .filter(|(a, n)| *a == d && !names.contains(n))
                .cloned()
                .collect();
            for k in left {
                self.drop_app(ctl, &k, "its frontend directory is gone");
            }
            for name in names {
                self.handle(ctl, (d, name), socket_taken);
            }
        }
    }

    fn drop_app<B>(&mut self, ctl: &mut Control<B>, k: &(u16, String), why: &str)
    where
        B: GrantBackend<Notifier = N>,
        B::Mapping: 'static,
    {
        match self.apps.remove(k) {
            Some(App::Attached(e)) => ctl.detach(e, why),
            Some(App::Hello { pool, .. }) => ctl.pools_used[pool.0 as usize] = false,
            None => {}
        }
    }

    fn refuse<B>(&mut self, ctl: &mut Control<B>, k: &(u16, String), why: &str)
    where
        B: GrantBackend<Notifier = N>,
        B::Mapping: 'static,
    {
        self.drop_app(ctl, k, "refused");
        let _ = self.backend(ctl.instance).refuse(k.0, &k.1, why);
        tracing::warn!(domain = k.0, app = %k.1, "xen app refused: {why}");
    }

    fn handle<B>(&mut self, ctl: &mut Control<B>, k: (u16, String), socket_taken: &[(String, Mac)])
    where
        B: GrantBackend<Notifier = N>,
        B::Mapping: 'static,
    {
        let (d, ref name) = k;
        let name = name.clone();
        let st = match frontend_state(&self.xs, d, &name) {
            Ok(s) => s,
            Err(e) => return self.refuse(ctl, &k, &e.to_string()),
        };
        match (st, self.apps.get(&k)) {
            // Hello answered; the app is still writing.
            (XbState::Initialising, Some(App::Hello { .. })) => {}
            (XbState::Initialising, _) => {
                // A new Hello (first, or the app started over): forget any earlier port.
                self.drop_app(ctl, &k, "it started a new handshake");
                let mac = match read_hello(&self.xs, d, &name) {
                    Ok(x) => x,
                    Err(e) => return self.refuse(ctl, &k, &e.to_string()),
                };
                let admitted = self
                    .allowed
                    .iter()
                    .any(|(n, m)| *n == name && m.is_none_or(|m| m == mac));
                if !admitted {
                    let why = format!("no [[apps]] entry with xen = true admits {name}");
                    return self.refuse(ctl, &k, &why);
                }
                let mut taken = socket_taken.to_vec();
                taken.extend(self.view().taken);
                if let Err(e) = check_free(&taken, &name, mac) {
                    return self.refuse(ctl, &k, &e.to_string());
                }
                let Some(pool) = ctl.free_pool() else {
                    return self.refuse(ctl, &k, "no pool id left");
                };
                if let Err(e) = self.backend(ctl.instance).init_wait(d, &name, pool.0) {
                    tracing::warn!(domain = d, "xenstore: {e}");
                    return;
                }
                ctl.pools_used[pool.0 as usize] = true;
                tracing::info!(domain = d, app = %name, mac = %fmt_mac(mac), pool = pool.0, "xen app hello: InitWait");
                self.apps.insert(k, App::Hello { pool, name, mac });
            }
            (XbState::Initialised, Some(App::Hello { pool, mac, .. })) => {
                let (pool, mac) = (*pool, *mac);
                let t0 = Instant::now();
                match self.attach(ctl, d, pool, &name, mac) {
                    Ok(e) => {
                        let port = e.id.0;
                        self.apps.insert(k, App::Attached(e));
                        if let Err(err) = self.backend(ctl.instance).connected(d, &name, port) {
                            tracing::warn!(domain = d, "xenstore: {err}");
                        }
                        tracing::info!(
                            domain = d,
                            app = %name,
                            port,
                            "xen app connected: read, map, bind and attach in {:.1} ms",
                            t0.elapsed().as_secs_f64() * 1e3
                        );
                    }
                    Err(why) => self.refuse(ctl, &k, &why),
                }
            }
            (XbState::Initialised | XbState::Connected, None) => {
                // Attached to an earlier server instance: ask it to start again.
                if let Err(e) = self.backend(ctl.instance).restarted(d, &name) {
                    tracing::warn!(domain = d, "xenstore: {e}");
                } else {
                    tracing::info!(
                        domain = d,
                        "xen app of an earlier server instance: asked to attach again"
                    );
                }
            }
            (XbState::Closing | XbState::Closed, Some(_)) => {
                self.drop_app(ctl, &k, "it closed");
                let _ = self.backend(ctl.instance).forget(d, &name);
            }
            _ => {}
        }
    }

    /// Reads the app's grant, maps it, binds its event channel and puts its port on the
    /// switch. `mac` is the one admitted at Hello; the frontend's `mac` node is not read again.
    fn attach<B>(
        &mut self,
        ctl: &mut Control<B>,
        d: u16,
        pool: PoolId,
        name: &str,
        mac: Mac,
    ) -> Result<AppEntry<N>, String>
    where
        B: GrantBackend<Notifier = N>,
        B::Mapping: 'static,
    {
        let t0 = Instant::now();
        let fe = self
            .backend(ctl.instance)
            .frontend(d, name)
            .map_err(|e| e.to_string())?;
        let t_read = t0.elapsed();
        // The reference list: mapped read-only, copied out, unmapped, then checked.
        let list_refs: Vec<GrantRef> = fe.list_refs.iter().map(|&r| GrantRef(r)).collect();
        let raw = {
            let list = ctl
                .backend
                .map(DomId(d), &list_refs, Access::ReadOnly, &[])
                .map_err(|e| format!("mapping the reference list: {e}"))?;
            let region = grant_pool::Mapping::region(&list);
            let mut raw = vec![0u8; region.len()];
            region
                .read(0, &mut raw)
                .map_err(|e| format!("reading the reference list: {e}"))?;
            raw
        };
        let max = self.backend(ctl.instance).max_refs();
        let refs = RefList::parse(&raw, max).map_err(|e| e.to_string())?.0;
        let refs: Vec<GrantRef> = refs.into_iter().map(GrantRef).collect();
        let t_list = t0.elapsed();
        let mapping = ctl
            .backend
            .map(DomId(d), &refs, Access::ReadWrite, &[])
            .map_err(|e| format!("mapping the grant: {e}"))?;
        let t_map = t0.elapsed();
        let notifier = ctl
            .backend
            .bind_notifier(DomId(d), fe.event_channel, &[])
            .map_err(|e| format!("binding the event channel: {e}"))?;
        // The pool id is reserved for this domain already; add_app marks it used again.
        let e = ctl
            .add_app(name, mac, mapping, notifier, pool, None)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            domain = d,
            app = %name,
            "xen attach: xenstore reads {:.1} ms, reference list {:.1} ms, map {} pages {:.1} ms, bind + port {:.1} ms",
            t_read.as_secs_f64() * 1e3,
            (t_list - t_read).as_secs_f64() * 1e3,
            refs.len(),
            (t_map - t_list).as_secs_f64() * 1e3,
            (t0.elapsed() - t_map).as_secs_f64() * 1e3
        );
        Ok(e)
    }

    /// Takes every Xen app off the switch (the server is stopping) and says so in xenstore.
    pub fn close<B>(&mut self, ctl: &mut Control<B>)
    where
        B: GrantBackend<Notifier = N>,
        B::Mapping: 'static,
    {
        let keys: Vec<(u16, String)> = self.apps.keys().cloned().collect();
        for k in keys {
            self.drop_app(ctl, &k, "the server is stopping");
            let _ = self.backend(ctl.instance).forget(k.0, &k.1);
        }
    }
}
