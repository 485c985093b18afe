//! Windows event channel sources as Wazuh's `windows_eventchannel` decoder
//! emits them: `data.win.system` (provider, event id, record id, computer,
//! the rendered event message) and `data.win.eventdata` (camelCase fields).
//! Security channel: 4624 logon, 4625 failed logon, 4634 logoff, 4698
//! scheduled task; Sysmon: 1 process creation, 11 file creation.

use std::fmt::Write as _;

use super::alert::{Draft, Who};
use super::civil;
use super::json::esc;
use super::rng::Rng;
use super::sources::{Hashes, write_guid};
use super::tenant::Tenant;

const SECURITY: (&str, &str, &str) =
    ("Microsoft-Windows-Security-Auditing", "{54849625-5478-4994-a5ba-3e3b0328c30d}", "Security");
const SYSMON: (&str, &str, &str) =
    ("Microsoft-Windows-Sysmon", "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}", "Microsoft-Windows-Sysmon/Operational");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    AuditSuccess,
    AuditFailure,
    Sysmon,
}

/// Wraps `d.ev` (eventdata) and `d.scratch` (message) into `data.win`.
#[allow(clippy::too_many_arguments)]
fn finish(
    d: &mut Draft,
    t: &mut Tenant,
    a: usize,
    ts: i64,
    rng: &mut Rng,
    event_id: u32,
    version: u8,
    task: u32,
    ch: Channel,
) {
    let record = t.next_record(a);
    let ag = &t.agents[a];
    d.who = Who::Agent(a);
    d.decoder = "windows_eventchannel";
    d.location.push_str("EventChannel");
    let (provider, guid, channel) = if ch == Channel::Sysmon { SYSMON } else { SECURITY };
    let ticks = rng.below(10_000) as u32;
    let j = &mut d.data;
    j.begin();
    j.obj("win");
    j.obj("system");
    j.str("providerName", provider).str("providerGuid", guid);
    j.num_str("eventID", u64::from(event_id)).num_str("version", u64::from(version));
    j.str("level", if ch == Channel::Sysmon { "4" } else { "0" });
    j.num_str("task", u64::from(task)).str("opcode", "0");
    j.str(
        "keywords",
        match ch {
            Channel::AuditSuccess => "0x8020000000000000",
            Channel::AuditFailure => "0x8010000000000000",
            Channel::Sysmon => "0x8000000000000000",
        },
    );
    j.str_with("systemTime", |o| civil::write_windows(o, ts, ticks));
    j.num_str("eventRecordID", record);
    if ch == Channel::Sysmon {
        j.num_str("processID", 3000 + rng.below(900)).num_str("threadID", 4000 + rng.below(2000));
    } else {
        j.str("processID", "724").num_str("threadID", 700 + rng.below(9000));
    }
    j.str("channel", channel).str("computer", &ag.fqdn);
    j.str(
        "severityValue",
        match ch {
            Channel::AuditSuccess => "AUDIT_SUCCESS",
            Channel::AuditFailure => "AUDIT_FAILURE",
            Channel::Sysmon => "INFORMATION",
        },
    );
    // Wazuh keeps the rendered message with its surrounding quotes.
    j.key("message");
    j.buf.push_str("\"\\\"");
    esc(&mut j.buf, &d.scratch);
    j.buf.push_str("\\\"\"");
    j.end();
    j.raw("eventdata", &d.ev.buf);
    j.end();
    j.end();
    // Rules without `no_full_log` (the 926xx remote-logon family) keep the
    // event JSON as the full log, as the eventchannel decoder does.
    d.full_log_is_data = true;
}

fn logon_id(out: &mut String, rng: &mut Rng) {
    let _ = write!(out, "0x{:x}", rng.range(0x10_0000, 0x0FFF_FFFF));
}

/// A successful logon.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Logon<'a> {
    pub user: &'a str,
    pub domain: &'a str,
    pub user_sid: &'a str,
    /// 2 interactive, 3 network, 5 service, 7 unlock, 10 remote interactive, 11 cached.
    pub logon_type: u8,
    /// Source address, `-` for local logons.
    pub ip: &'a str,
    pub port: u16,
    pub workstation: &'a str,
    /// `Kerberos`, `NTLM` or `Negotiate`.
    pub auth: &'static str,
    pub elevated: bool,
}

/// Event 4624 (rules 60106, 92652, 92653, 92657 depending on type and package).
pub(crate) fn logon_success(d: &mut Draft, t: &mut Tenant, a: usize, ts: i64, rng: &mut Rng, rule: u32, l: &Logon<'_>) {
    d.rule = rule;
    let ag = &t.agents[a];
    let network = l.logon_type == 3;
    let mut machine = String::new();
    let _ = write!(machine, "{}$", ag.netbios);
    let (ssid, sname, sdom, slid) =
        if network { ("S-1-0-0", "-", "-", "0x0") } else { ("S-1-5-18", machine.as_str(), t.domain.as_str(), "0x3e7") };
    let (lproc, pname, pid) = match (l.logon_type, l.auth) {
        (3, "Kerberos") => ("Kerberos", "-", "0x0"),
        (3, _) => ("NtLmSsp ", "-", "0x0"),
        (5, _) => ("Advapi  ", "C:\\Windows\\System32\\services.exe", "0x2a0"),
        _ => ("User32 ", "C:\\Windows\\System32\\svchost.exe", "0x3c8"),
    };
    let ntlm = l.auth == "NTLM";
    let mut tlid = String::new();
    logon_id(&mut tlid, rng);
    let mut lguid = String::new();
    if l.auth == "Kerberos" {
        write_guid(&mut lguid, rng, false);
    } else {
        lguid.push_str("{00000000-0000-0000-0000-000000000000}");
    }
    let e = &mut d.ev;
    e.begin();
    e.str("subjectUserSid", ssid).str("subjectUserName", sname).str("subjectDomainName", sdom);
    e.str("subjectLogonId", slid);
    e.str("targetUserSid", l.user_sid).str("targetUserName", l.user).str("targetDomainName", l.domain);
    e.str("targetLogonId", &tlid);
    e.num_str("logonType", u64::from(l.logon_type));
    e.str("logonProcessName", lproc).str("authenticationPackageName", l.auth);
    e.str("workstationName", l.workstation).str("logonGuid", &lguid);
    e.str("transmittedServices", "-").str("lmPackageName", if ntlm { "NTLM V2" } else { "-" });
    e.str("keyLength", if ntlm { "128" } else { "0" });
    e.str("processId", pid).str("processName", pname);
    e.str("ipAddress", l.ip).num_str("ipPort", u64::from(l.port));
    e.str("impersonationLevel", "%%1833").str("restrictedAdminMode", "-");
    e.str("virtualAccount", "%%1843").str("targetLinkedLogonId", "0x0");
    e.str("elevatedToken", if l.elevated { "%%1842" } else { "%%1843" });
    e.end();
    let _ = write!(
        d.scratch,
        "An account was successfully logged on.\r\n\r\nSubject:\r\n\tSecurity ID:\t\t{ssid}\r\n\tAccount Name:\t\t{sname}\r\n\tAccount Domain:\t\t{sdom}\r\n\tLogon ID:\t\t{slid}\r\n\r\nLogon Information:\r\n\tLogon Type:\t\t{}\r\n\tRestricted Admin Mode:\t-\r\n\tVirtual Account:\t\tNo\r\n\tElevated Token:\t\t{}\r\n\r\nImpersonation Level:\t\tImpersonation\r\n\r\nNew Logon:\r\n\tSecurity ID:\t\t{}\r\n\tAccount Name:\t\t{}\r\n\tAccount Domain:\t\t{}\r\n\tLogon ID:\t\t{tlid}\r\n\tLinked Logon ID:\t\t0x0\r\n\tNetwork Account Name:\t-\r\n\tNetwork Account Domain:\t-\r\n\tLogon GUID:\t\t{lguid}\r\n\r\nProcess Information:\r\n\tProcess ID:\t\t{pid}\r\n\tProcess Name:\t\t{pname}\r\n\r\nNetwork Information:\r\n\tWorkstation Name:\t{}\r\n\tSource Network Address:\t{}\r\n\tSource Port:\t\t{}\r\n\r\nDetailed Authentication Information:\r\n\tLogon Process:\t\t{lproc}\r\n\tAuthentication Package:\t{}\r\n\tTransited Services:\t-\r\n\tPackage Name (NTLM only):\t{}\r\n\tKey Length:\t\t{}",
        l.logon_type,
        if l.elevated { "Yes" } else { "No" },
        l.user_sid,
        l.user,
        l.domain,
        l.workstation,
        l.ip,
        l.port,
        l.auth,
        if ntlm { "NTLM V2" } else { "-" },
        if ntlm { 128 } else { 0 },
    );
    d.fields.set("win.eventdata.subjectDomainName", sdom);
    d.fields.set("win.eventdata.targetUserName", l.user);
    d.fields.set("win.eventdata.targetDomainName", l.domain);
    d.fields.set("win.eventdata.workstationName", l.workstation);
    d.fields.set("win.eventdata.ipAddress", l.ip);
    finish(d, t, a, ts, rng, 4624, 2, 12544, Channel::AuditSuccess);
}

/// Why a logon failed (4625 `subStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailReason {
    BadPassword,
    NoSuchUser,
}

/// Event 4625 over the network (60122, or 60204 when it completes a burst).
#[allow(clippy::too_many_arguments)]
pub(crate) fn logon_failure(
    d: &mut Draft,
    t: &mut Tenant,
    a: usize,
    ts: i64,
    rng: &mut Rng,
    rule: u32,
    user: &str,
    ip: &str,
    port: u16,
    workstation: &str,
    reason: FailReason,
) {
    d.rule = rule;
    let sub = match reason {
        FailReason::BadPassword => "0xc000006a",
        FailReason::NoSuchUser => "0xc0000064",
    };
    let domain = t.domain.clone();
    let e = &mut d.ev;
    e.begin();
    e.str("subjectUserSid", "S-1-0-0").str("subjectUserName", "-").str("subjectDomainName", "-");
    e.str("subjectLogonId", "0x0").str("targetUserSid", "S-1-0-0");
    e.str("targetUserName", user).str("targetDomainName", &domain);
    e.str("status", "0xc000006d").str("failureReason", "%%2313").str("subStatus", sub);
    e.str("logonType", "3").str("logonProcessName", "NtLmSsp ");
    e.str("authenticationPackageName", "NTLM").str("workstationName", workstation);
    e.str("transmittedServices", "-").str("lmPackageName", "-").str("keyLength", "0");
    e.str("processId", "0x0").str("processName", "-");
    e.str("ipAddress", ip).num_str("ipPort", u64::from(port));
    e.end();
    let _ = write!(
        d.scratch,
        "An account failed to log on.\r\n\r\nSubject:\r\n\tSecurity ID:\t\tS-1-0-0\r\n\tAccount Name:\t\t-\r\n\tAccount Domain:\t\t-\r\n\tLogon ID:\t\t0x0\r\n\r\nLogon Type:\t\t\t3\r\n\r\nAccount For Which Logon Failed:\r\n\tSecurity ID:\t\tS-1-0-0\r\n\tAccount Name:\t\t{user}\r\n\tAccount Domain:\t\t{domain}\r\n\r\nFailure Information:\r\n\tFailure Reason:\t\tUnknown user name or bad password.\r\n\tStatus:\t\t\t0xC000006D\r\n\tSub Status:\t\t{}\r\n\r\nProcess Information:\r\n\tCaller Process ID:\t0x0\r\n\tCaller Process Name:\t-\r\n\r\nNetwork Information:\r\n\tWorkstation Name:\t{workstation}\r\n\tSource Network Address:\t{ip}\r\n\tSource Port:\t\t{port}\r\n\r\nDetailed Authentication Information:\r\n\tLogon Process:\t\tNtLmSsp \r\n\tAuthentication Package:\tNTLM\r\n\tTransited Services:\t-\r\n\tPackage Name (NTLM only):\t-\r\n\tKey Length:\t\t0",
        sub.to_ascii_uppercase().replace("0X", "0x"),
    );
    d.fields.set("win.eventdata.targetUserName", user);
    d.fields.set("win.eventdata.ipAddress", ip);
    finish(d, t, a, ts, rng, 4625, 0, 12544, Channel::AuditFailure);
}

/// Event 4634 (60137).
#[allow(clippy::too_many_arguments)]
pub(crate) fn logoff(
    d: &mut Draft,
    t: &mut Tenant,
    a: usize,
    ts: i64,
    rng: &mut Rng,
    user: &str,
    domain: &str,
    user_sid: &str,
    logon_type: u8,
) {
    d.rule = 60137;
    let mut lid = String::new();
    logon_id(&mut lid, rng);
    let e = &mut d.ev;
    e.begin();
    e.str("targetUserSid", user_sid).str("targetUserName", user).str("targetDomainName", domain);
    e.str("targetLogonId", &lid).num_str("logonType", u64::from(logon_type));
    e.end();
    let _ = write!(
        d.scratch,
        "An account was logged off.\r\n\r\nSubject:\r\n\tSecurity ID:\t\t{user_sid}\r\n\tAccount Name:\t\t{user}\r\n\tAccount Domain:\t\t{domain}\r\n\tLogon ID:\t\t{lid}\r\n\r\nLogon Type:\t\t\t{logon_type}\r\n\r\nThis event is generated when a logon session is destroyed. It may be positively correlated with a logon event using the Logon ID value. Logon IDs are only unique between reboots on the same computer."
    );
    d.fields.set("win.eventdata.targetUserName", user);
    finish(d, t, a, ts, rng, 4634, 0, 12545, Channel::AuditSuccess);
}

/// Event 4698 (60228).
#[allow(clippy::too_many_arguments)]
pub(crate) fn task_created(
    d: &mut Draft,
    t: &mut Tenant,
    a: usize,
    ts: i64,
    rng: &mut Rng,
    user: &str,
    user_sid: &str,
    task: &str,
    command: &str,
    arguments: &str,
) {
    d.rule = 60228;
    let domain = if user == "SYSTEM" { "NT AUTHORITY".to_string() } else { t.domain.clone() };
    let mut lid = String::new();
    logon_id(&mut lid, rng);
    let mut xml = String::new();
    let _ = write!(
        xml,
        "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\r\n<Task version=\"1.2\" xmlns=\"http://schemas.microsoft.com/windows/2004/02/mit/task\">\r\n  <RegistrationInfo>\r\n    <Author>{domain}\\{user}</Author>\r\n    <URI>{task}</URI>\r\n  </RegistrationInfo>\r\n  <Triggers>\r\n    <LogonTrigger>\r\n      <Enabled>true</Enabled>\r\n    </LogonTrigger>\r\n  </Triggers>\r\n  <Principals>\r\n    <Principal id=\"Author\">\r\n      <RunLevel>HighestAvailable</RunLevel>\r\n    </Principal>\r\n  </Principals>\r\n  <Actions Context=\"Author\">\r\n    <Exec>\r\n      <Command>{command}</Command>\r\n      <Arguments>{arguments}</Arguments>\r\n    </Exec>\r\n  </Actions>\r\n</Task>"
    );
    let e = &mut d.ev;
    e.begin();
    e.str("subjectUserSid", user_sid).str("subjectUserName", user).str("subjectDomainName", &domain);
    e.str("subjectLogonId", &lid).str("taskName", task).str("taskContent", &xml);
    e.end();
    let _ = write!(
        d.scratch,
        "A scheduled task was created.\r\n\r\nSubject:\r\n\tSecurity ID:\t\t{user_sid}\r\n\tAccount Name:\t\t{user}\r\n\tAccount Domain:\t\t{domain}\r\n\tLogon ID:\t\t{lid}\r\n\r\nTask Information:\r\n\tTask Name: \t\t{task}\r\n\tTask Content: \t\t{xml}"
    );
    finish(d, t, a, ts, rng, 4698, 1, 12804, Channel::AuditSuccess);
}

/// A process as Sysmon event 1 describes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Process<'a> {
    pub image: &'a str,
    pub command_line: &'a str,
    pub current_directory: &'a str,
    /// `DOMAIN\user`.
    pub user: &'a str,
    pub integrity: &'static str,
    pub parent_image: &'a str,
    pub parent_command_line: &'a str,
    pub description: &'a str,
    pub product: &'a str,
    pub company: &'a str,
    pub original_file_name: &'a str,
    pub hashes: &'a Hashes,
}

/// Sysmon event 1, process creation (92052, 92066, 92067, 92068, …).
pub(crate) fn sysmon_process(
    d: &mut Draft,
    t: &mut Tenant,
    a: usize,
    ts: i64,
    rng: &mut Rng,
    rule: u32,
    p: &Process<'_>,
) {
    d.rule = rule;
    let mut guid = String::new();
    write_guid(&mut guid, rng, false);
    let mut pguid = String::new();
    write_guid(&mut pguid, rng, false);
    let mut lguid = String::new();
    write_guid(&mut lguid, rng, false);
    let mut lid = String::new();
    logon_id(&mut lid, rng);
    let mut hashes = String::new();
    p.hashes.write_sysmon(&mut hashes);
    let pid = 1000 + rng.below(15_000);
    let ppid = 500 + rng.below(15_000);
    let mut utc = String::new();
    civil::write_sysmon(&mut utc, ts);
    let e = &mut d.ev;
    e.begin();
    e.str("ruleName", "-").str("utcTime", &utc).str("processGuid", &guid).num_str("processId", pid);
    e.str("image", p.image).str("fileVersion", "-").str("description", p.description);
    e.str("product", p.product).str("company", p.company).str("originalFileName", p.original_file_name);
    e.str("commandLine", p.command_line).str("currentDirectory", p.current_directory);
    e.str("user", p.user).str("logonGuid", &lguid).str("logonId", &lid).str("terminalSessionId", "1");
    e.str("integrityLevel", p.integrity).str("hashes", &hashes);
    e.str("parentProcessGuid", &pguid).num_str("parentProcessId", ppid);
    e.str("parentImage", p.parent_image).str("parentCommandLine", p.parent_command_line);
    e.str("parentUser", p.user);
    e.end();
    let _ = write!(
        d.scratch,
        "Process Create:\r\nRuleName: -\r\nUtcTime: {utc}\r\nProcessGuid: {guid}\r\nProcessId: {pid}\r\nImage: {}\r\nFileVersion: -\r\nDescription: {}\r\nProduct: {}\r\nCompany: {}\r\nOriginalFileName: {}\r\nCommandLine: {}\r\nCurrentDirectory: {}\r\nUser: {}\r\nLogonGuid: {lguid}\r\nLogonId: {lid}\r\nTerminalSessionId: 1\r\nIntegrityLevel: {}\r\nHashes: {hashes}\r\nParentProcessGuid: {pguid}\r\nParentProcessId: {ppid}\r\nParentImage: {}\r\nParentCommandLine: {}\r\nParentUser: {}",
        p.image,
        p.description,
        p.product,
        p.company,
        p.original_file_name,
        p.command_line,
        p.current_directory,
        p.user,
        p.integrity,
        p.parent_image,
        p.parent_command_line,
        p.user,
    );
    d.fields.set("win.eventdata.image", p.image);
    d.fields.set("win.eventdata.parentImage", p.parent_image);
    d.fields.set("win.eventdata.commandLine", p.command_line);
    d.fields.set("win.eventdata.originalFileName", p.original_file_name);
    finish(d, t, a, ts, rng, 1, 5, 1, Channel::Sysmon);
}

/// Sysmon event 11, file created (92200, 92213, …).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sysmon_file_created(
    d: &mut Draft,
    t: &mut Tenant,
    a: usize,
    ts: i64,
    rng: &mut Rng,
    rule: u32,
    image: &str,
    target: &str,
    user: &str,
) {
    d.rule = rule;
    let mut guid = String::new();
    write_guid(&mut guid, rng, false);
    let pid = if image == "System" { 4 } else { 1000 + rng.below(15_000) };
    let mut utc = String::new();
    civil::write_sysmon(&mut utc, ts);
    let e = &mut d.ev;
    e.begin();
    e.str("ruleName", "-").str("utcTime", &utc).str("processGuid", &guid).num_str("processId", pid);
    e.str("image", image).str("targetFilename", target).str("creationUtcTime", &utc).str("user", user);
    e.end();
    let _ = write!(
        d.scratch,
        "File created:\r\nRuleName: -\r\nUtcTime: {utc}\r\nProcessGuid: {guid}\r\nProcessId: {pid}\r\nImage: {image}\r\nTargetFilename: {target}\r\nCreationUtcTime: {utc}\r\nUser: {user}"
    );
    d.fields.set("win.eventdata.image", image);
    d.fields.set("win.eventdata.targetFilename", target);
    finish(d, t, a, ts, rng, 11, 2, 11, Channel::Sysmon);
}
