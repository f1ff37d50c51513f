// Texts of the panel in English and Simplified Chinese. The language comes from the browser
// (navigator.languages) unless the user picked one (kept in localStorage).
"use strict";

const TEXTS = {
  en: {
    title: "12345 hotline",
    login: "Log in",
    logout: "Log out",
    username: "User name",
    password: "Password",
    wrong_login: "Wrong user name or password.",
    too_many: "Too many failed logins. Try again later.",
    pbx_down: "PBX connection down since",
    pbx_up: "PBX connected",
    replay: "replay",
    queues: "Queues",
    agents: "Agents",
    last_15: "Last 15 minutes",
    waiting_now: "Waiting now",
    longest_wait: "Longest wait",
    answered_offered: "Answered / offered",
    answer_rate: "Answer rate",
    service_level: "Service level",
    asa: "ASA",
    aht: "AHT",
    abandoned: "Abandoned",
    short_abandoned: "of them short",
    timed_out: "Timed out",
    agent: "Agent",
    state: "State",
    pause_reason: "Pause reason",
    answered: "Answered",
    talk_time: "Talk time",
    no_queues: "No calls yet today.",
    state_idle: "Idle",
    state_ringing: "Ringing",
    state_on_call: "On a call",
    state_wrap_up: "Wrap-up",
    state_paused: "Paused",
    state_unavailable: "Unavailable",
    state_logged_out: "Logged out",
    live: "live",
    reconnecting: "reconnecting…",
    language: "中文",
    role_admin: "admin",
    role_supervisor: "supervisor",
    role_agent: "agent",
    by_hour: "Today by hour",
    volume: "calls offered",
    my_phone: "My phone",
    ringing_now: "Ringing now",
    caller: "Caller",
    ticket: "Ticket",
    no_ticket: "no ticket yet",
    status: "Status",
    category: "Category",
    description: "Description",
    department: "Department",
    save: "Save",
    saved: "Saved.",
    sign: "Sign the ticket",
    earlier_tickets: "Earlier tickets",
    earlier_calls: "Earlier calls",
    pause: "Pause",
    unpause: "Resume",
    reason: "Reason",
    queue_login: "Log in",
    queue_logout: "Log out",
    waiting_for_calls: "Waiting for a call. The caller pops up here when your phone rings.",
    no_phone: "This user has no softphone interface.",
    failed: "Failed:",
  },
  "zh-CN": {
    title: "12345 热线",
    login: "登录",
    logout: "退出",
    username: "用户名",
    password: "密码",
    wrong_login: "用户名或密码错误。",
    too_many: "登录失败次数过多，请稍后再试。",
    pbx_down: "交换机连接中断，自",
    pbx_up: "交换机已连接",
    replay: "回放",
    queues: "队列",
    agents: "坐席",
    last_15: "最近 15 分钟",
    waiting_now: "排队中",
    longest_wait: "最长等待",
    answered_offered: "接通 / 呼入",
    answer_rate: "接通率",
    service_level: "服务水平",
    asa: "平均应答时长",
    aht: "平均处理时长",
    abandoned: "放弃",
    short_abandoned: "其中短时放弃",
    timed_out: "超时",
    agent: "坐席",
    state: "状态",
    pause_reason: "暂停原因",
    answered: "接听",
    talk_time: "通话时长",
    no_queues: "今天还没有来电。",
    state_idle: "空闲",
    state_ringing: "振铃",
    state_on_call: "通话中",
    state_wrap_up: "话后处理",
    state_paused: "暂停",
    state_unavailable: "不可用",
    state_logged_out: "已签出",
    live: "实时",
    reconnecting: "正在重连…",
    language: "English",
    role_admin: "管理员",
    role_supervisor: "班长",
    role_agent: "坐席",
    by_hour: "今日分时",
    volume: "呼入量",
    my_phone: "我的话机",
    ringing_now: "来电振铃",
    caller: "来电号码",
    ticket: "工单",
    no_ticket: "尚无工单",
    status: "状态",
    category: "类别",
    description: "描述",
    department: "承办部门",
    save: "保存",
    saved: "已保存。",
    sign: "签收工单",
    earlier_tickets: "历史工单",
    earlier_calls: "历史来电",
    pause: "暂停",
    unpause: "恢复",
    reason: "原因",
    queue_login: "签入",
    queue_logout: "签出",
    waiting_for_calls: "等待来电。话机振铃时，来电信息会显示在这里。",
    no_phone: "此用户没有绑定话机。",
    failed: "失败：",
  },
};

function chosenLanguage() {
  const kept = localStorage.getItem("hotline-language");
  if (kept && TEXTS[kept]) return kept;
  for (const wanted of navigator.languages || [navigator.language || "en"]) {
    if (wanted.toLowerCase().startsWith("zh")) return "zh-CN";
    if (wanted.toLowerCase().startsWith("en")) return "en";
  }
  return "en";
}

let language = chosenLanguage();

function t(key) {
  return (TEXTS[language] && TEXTS[language][key]) || TEXTS.en[key] || key;
}

function applyTexts(root = document) {
  document.documentElement.lang = language;
  for (const element of root.querySelectorAll("[data-text]")) {
    element.textContent = t(element.dataset.text);
  }
}

function switchLanguage() {
  language = language === "en" ? "zh-CN" : "en";
  localStorage.setItem("hotline-language", language);
  applyTexts();
  document.dispatchEvent(new Event("languagechange"));
}
