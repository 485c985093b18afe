//! Per-tenant assets: agents (Linux servers, web servers, an IDS sensor,
//! Windows servers, domain controllers, workstations), users, service
//! accounts and a private subnet, all derived from the seed and the tenant's
//! position so that a tenant looks the same in every run with that seed.

use std::fmt::Write as _;

use super::json::esc;
use super::rng::Rng;

const NAMED_TENANTS: [&str; 10] =
    ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "tyrell", "cyberdyne"];

/// The name of the tenant at position `i` (0-based): `acme`, …, `cyberdyne`,
/// then `tenant-11`, `tenant-12`, ….
pub(crate) fn tenant_name(i: usize) -> String {
    match NAMED_TENANTS.get(i) {
        Some(n) => (*n).to_string(),
        None => format!("tenant-{}", i + 1),
    }
}

const FIRST_NAMES: [&str; 48] = [
    "james",
    "mary",
    "robert",
    "patricia",
    "john",
    "jennifer",
    "michael",
    "linda",
    "david",
    "elizabeth",
    "william",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "carlos",
    "karen",
    "daniel",
    "lisa",
    "matthew",
    "nancy",
    "anthony",
    "sandra",
    "mark",
    "ashley",
    "paul",
    "emily",
    "steven",
    "donna",
    "andrew",
    "michelle",
    "kevin",
    "carol",
    "brian",
    "amanda",
    "george",
    "melissa",
    "omar",
    "priya",
    "wei",
    "fatima",
    "lukas",
    "sofia",
    "hiroshi",
    "amara",
];

const LAST_NAMES: [&str; 60] = [
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "torres",
    "nguyen",
    "hill",
    "flores",
    "green",
    "adams",
    "nelson",
    "baker",
    "hall",
    "rivera",
    "campbell",
    "mitchell",
    "carter",
    "roberts",
    "kowalski",
    "schmidt",
    "novak",
    "mueller",
    "rossi",
    "silva",
    "tanaka",
    "patel",
    "okafor",
    "haddad",
];

/// Linux service accounts that log in over SSH and run sudo all day.
pub(crate) const LINUX_SERVICE_ACCOUNTS: [&str; 6] = ["ansible", "backup", "nagios", "deploy", "jenkins", "zabbix"];

/// Windows service accounts (domain accounts that log on to servers).
pub(crate) const WINDOWS_SERVICE_ACCOUNTS: [&str; 6] =
    ["svc_sql", "svc_backup", "svc_scan", "svc_sccm", "svc_veeam", "svc_iis"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Application, database, CI, monitoring and bastion hosts.
    Linux,
    /// Internet-facing nginx or Apache.
    Web,
    /// The Suricata sensor (reports on traffic of the whole tenant).
    Ids,
    DomainController,
    WinServer,
    Workstation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Os {
    Ubuntu,
    Rhel,
    Windows,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebServer {
    Nginx,
    Apache,
}

#[derive(Debug)]
pub(crate) struct Agent {
    pub name: String,
    pub ip: String,
    pub role: Role,
    pub os: Os,
    pub web: Option<WebServer>,
    /// Windows NetBIOS name (`ACME-WS-017`); the short hostname on Linux.
    pub netbios: String,
    /// Windows `computer` (`ACME-WS-017.acme.local`).
    pub fqdn: String,
    /// Pre-rendered `"agent":{…},"manager":{…}`.
    pub header: String,
}

impl Agent {
    pub(crate) fn is_windows(&self) -> bool {
        self.os == Os::Windows
    }

    /// Where sshd, sudo and PAM write on this distribution.
    pub(crate) fn auth_log(&self) -> &'static str {
        match self.os {
            Os::Rhel => "/var/log/secure",
            _ => "/var/log/auth.log",
        }
    }

    /// The general syslog file.
    pub(crate) fn syslog(&self) -> &'static str {
        match self.os {
            Os::Rhel => "/var/log/messages",
            _ => "/var/log/syslog",
        }
    }

    pub(crate) fn access_log(&self) -> &'static str {
        match (self.web, self.os) {
            (Some(WebServer::Apache), Os::Rhel) => "/var/log/httpd/access_log",
            (Some(WebServer::Apache), _) => "/var/log/apache2/access.log",
            _ => "/var/log/nginx/access.log",
        }
    }
}

#[derive(Debug)]
pub(crate) struct User {
    /// sAMAccountName and Linux login (`jsmith`).
    pub name: String,
    pub uid: u32,
    pub rid: u32,
}

#[derive(Debug)]
pub(crate) struct Tenant {
    pub name: String,
    /// NetBIOS domain (`ACME`).
    pub domain: String,
    /// DNS domain (`acme.local`).
    pub dns: String,
    /// Domain SID prefix (`S-1-5-21-…`).
    pub sid: String,
    pub agents: Vec<Agent>,
    /// Header for alerts of the manager itself (agent 000).
    pub manager_header: String,
    pub users: Vec<User>,
    /// Indices of IT administrators in `users`.
    pub admins: Vec<usize>,
    pub linux_services: Vec<&'static str>,
    pub win_services: Vec<&'static str>,
    pub linux: Vec<usize>,
    pub web: Vec<usize>,
    pub ids: usize,
    pub dcs: Vec<usize>,
    pub win_servers: Vec<usize>,
    pub workstations: Vec<usize>,
    /// Windows servers and domain controllers.
    pub win_infra: Vec<usize>,
    /// The CI / configuration-management host that SSHes everywhere.
    pub automation: usize,
    /// The IT admins' jump host.
    pub bastion: usize,
    /// Monotonic Windows `eventRecordID` per agent.
    pub record_ids: Vec<u64>,
    /// Wazuh `firedtimes` per rule (the manager's counter).
    pub fired: Vec<u64>,
    /// Byte offset in this manager's alerts file (the part after the dot of
    /// an alert `id`).
    pub offset: u64,
}

/// Number of agents of tenant `i`: 20–60, a fixed function of its position.
pub(crate) fn agent_count(i: usize) -> usize {
    20 + (i * 13 + 7) % 41
}

impl Tenant {
    pub(crate) fn new(index: usize, seed: u64, rule_count: usize) -> Tenant {
        let mut rng = Rng::derive(&[seed, 0x007E_4A47, index as u64]);
        let name = tenant_name(index);
        let domain: String =
            name.chars().filter(|c| c.is_ascii_alphanumeric()).take(15).collect::<String>().to_ascii_uppercase();
        let dns = format!("{name}.local");
        let sid = format!(
            "S-1-5-21-{}-{}-{}",
            rng.range(1_000_000_000, 4_000_000_000),
            rng.range(1_000_000_000, 4_000_000_000),
            rng.range(100_000_000, 4_000_000_000)
        );
        let octet = 10 + index % 240;
        let n = agent_count(index);
        let n_dc = if n >= 45 { 2 } else { 1 };
        let n_web = 2 + n / 25;
        let n_linux = 3 + n / 8;
        let n_winsrv = 1 + n / 30;
        let n_ws = n - n_dc - n_web - n_linux - n_winsrv - 1;

        let mut t = Tenant {
            name: name.clone(),
            domain,
            dns,
            sid,
            agents: Vec::with_capacity(n),
            manager_header: String::new(),
            users: Vec::new(),
            admins: Vec::new(),
            linux_services: Vec::new(),
            win_services: Vec::new(),
            linux: Vec::new(),
            web: Vec::new(),
            ids: 0,
            dcs: Vec::new(),
            win_servers: Vec::new(),
            workstations: Vec::new(),
            win_infra: Vec::new(),
            automation: 0,
            bastion: 0,
            record_ids: Vec::new(),
            fired: vec![0; rule_count],
            offset: rng.range(1_000_000, 900_000_000),
        };

        const LINUX_KINDS: [&str; 7] = ["app", "db", "k8s-node", "app", "mq", "cache", "db"];
        let mut counters = std::collections::BTreeMap::<&str, usize>::new();
        let mut next = |kind: &'static str| {
            let c = counters.entry(kind).or_insert(0);
            *c += 1;
            *c
        };
        for i in 0..n_linux {
            let kind = match i {
                0 => "bastion",
                1 => "ci",
                2 => "mon",
                _ => LINUX_KINDS[(i - 3) % LINUX_KINDS.len()],
            };
            let os = if kind == "db" || rng.chance(0.2) { Os::Rhel } else { Os::Ubuntu };
            let host = format!("{name}-{kind}-{:02}", next(kind));
            let ip = format!("10.{octet}.1.{}", 10 + t.agents.len());
            t.push_agent(host, ip, Role::Linux, os, None);
        }
        for _ in 0..n_web {
            let web = if rng.chance(0.6) { WebServer::Nginx } else { WebServer::Apache };
            let os = if web == WebServer::Apache && rng.chance(0.5) { Os::Rhel } else { Os::Ubuntu };
            let host = format!("{name}-web-{:02}", next("web"));
            let ip = format!("10.{octet}.1.{}", 10 + t.agents.len());
            t.push_agent(host, ip, Role::Web, os, Some(web));
        }
        {
            let host = format!("{name}-ids-01");
            let ip = format!("10.{octet}.1.{}", 10 + t.agents.len());
            t.push_agent(host, ip, Role::Ids, Os::Ubuntu, None);
        }
        for i in 0..n_dc {
            let host = format!("{name}-dc-{:02}", i + 1);
            let ip = format!("10.{octet}.0.{}", 10 + i);
            t.push_agent(host, ip, Role::DomainController, Os::Windows, None);
        }
        const SRV_KINDS: [&str; 3] = ["fs", "sql", "rds"];
        for i in 0..n_winsrv {
            let kind = SRV_KINDS[i % SRV_KINDS.len()];
            let host = format!("{name}-{kind}-{:02}", next(kind));
            let ip = format!("10.{octet}.0.{}", 20 + i);
            t.push_agent(host, ip, Role::WinServer, Os::Windows, None);
        }
        for i in 0..n_ws {
            let host = format!("{name}-ws-{:03}", i + 1);
            let ip = format!("10.{octet}.{}.{}", 20 + i / 200, 20 + i % 200);
            t.push_agent(host, ip, Role::Workstation, Os::Windows, None);
        }
        for (i, a) in t.agents.iter().enumerate() {
            match a.role {
                Role::Linux => t.linux.push(i),
                Role::Web => t.web.push(i),
                Role::Ids => t.ids = i,
                Role::DomainController => t.dcs.push(i),
                Role::WinServer => t.win_servers.push(i),
                Role::Workstation => t.workstations.push(i),
            }
        }
        t.win_infra = t.win_servers.iter().chain(&t.dcs).copied().collect();
        t.bastion = t.linux[0];
        t.automation = t.linux[1];
        t.record_ids = (0..t.agents.len()).map(|_| rng.range(50_000, 9_000_000)).collect();

        // Users: one or two per workstation, the first three are IT admins.
        let n_users = n_ws + n_ws / 2 + 6;
        let mut taken = std::collections::BTreeSet::new();
        for i in 0..n_users {
            let first = *rng.pick(&FIRST_NAMES);
            let last = *rng.pick(&LAST_NAMES);
            let base = format!("{}{}", &first[..1], last);
            let mut login = base.clone();
            let mut k = 2;
            while !taken.insert(login.clone()) {
                login = format!("{base}{k}");
                k += 1;
            }
            t.users.push(User { name: login, uid: 1001 + i as u32, rid: 1104 + i as u32 });
        }
        t.admins = vec![0, 1, 2];
        let mut svc: Vec<&'static str> = LINUX_SERVICE_ACCOUNTS.to_vec();
        rng.shuffle(&mut svc);
        svc.truncate(3 + rng.index(3));
        t.linux_services = svc;
        let mut wsvc: Vec<&'static str> = WINDOWS_SERVICE_ACCOUNTS.to_vec();
        rng.shuffle(&mut wsvc);
        wsvc.truncate(3 + rng.index(3));
        t.win_services = wsvc;

        let mut h = String::from("\"agent\":{\"id\":\"000\",\"name\":\"");
        esc(&mut h, &name);
        h.push_str("\",\"labels\":{\"tenant\":\"");
        esc(&mut h, &name);
        h.push_str("\"}},\"manager\":{\"name\":\"");
        esc(&mut h, &name);
        h.push_str("\"}");
        t.manager_header = h;
        t
    }

    fn push_agent(&mut self, host: String, ip: String, role: Role, os: Os, web: Option<WebServer>) {
        let id = self.agents.len() + 1;
        let mut header = String::new();
        let _ = write!(header, "\"agent\":{{\"id\":\"{id:03}\",\"name\":\"");
        esc(&mut header, &host);
        let _ = write!(header, "\",\"ip\":\"{ip}\",\"labels\":{{\"tenant\":\"");
        esc(&mut header, &self.name);
        header.push_str("\"}},\"manager\":{\"name\":\"");
        esc(&mut header, &self.name);
        header.push_str("\"}");
        let (netbios, fqdn) = if os == Os::Windows {
            let nb = host.to_ascii_uppercase();
            let fqdn = format!("{}.{}", host, self.dns);
            (nb, fqdn)
        } else {
            (host.clone(), host.clone())
        };
        self.agents.push(Agent { name: host, ip, role, os, web, netbios, fqdn, header });
    }

    /// All hosts reachable from the internet by SSH / HTTP (Linux and web).
    pub(crate) fn internet_facing(&self) -> impl Iterator<Item = usize> + '_ {
        self.linux.iter().chain(self.web.iter()).copied()
    }

    /// All Windows agents.
    pub(crate) fn windows(&self) -> impl Iterator<Item = usize> + '_ {
        self.dcs.iter().chain(&self.win_servers).chain(&self.workstations).copied()
    }

    /// The primary user of workstation number `k` (index into `workstations`).
    pub(crate) fn ws_user(&self, k: usize) -> &User {
        &self.users[3 + k % (self.users.len() - 3)]
    }

    /// The next Windows event record id of an agent.
    pub(crate) fn next_record(&mut self, agent: usize) -> u64 {
        let r = &mut self.record_ids[agent];
        *r += 1;
        *r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_composition() {
        assert_eq!(tenant_name(0), "acme");
        assert_eq!(tenant_name(9), "cyberdyne");
        assert_eq!(tenant_name(10), "tenant-11");
        for i in 0..30 {
            let t = Tenant::new(i, 42, 1);
            let n = agent_count(i);
            assert!((20..=60).contains(&n));
            assert_eq!(t.agents.len(), n);
            assert!(!t.workstations.is_empty() && !t.dcs.is_empty() && t.web.len() >= 2);
            assert!(t.users.len() > 10);
            let names: std::collections::BTreeSet<_> = t.agents.iter().map(|a| &a.name).collect();
            assert_eq!(names.len(), n, "agent names are unique");
        }
        let t = Tenant::new(0, 42, 1);
        assert_eq!(t.agents[t.dcs[0]].name, "acme-dc-01");
        assert_eq!(t.agents[t.workstations[0]].name, "acme-ws-001");
        assert_eq!(t.agents[t.web[0]].name, "acme-web-01");
        assert!(t.agents[0].header.starts_with("\"agent\":{\"id\":\"001\",\"name\":\"acme-bastion-01\""));
    }
}
