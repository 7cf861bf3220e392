-- S-MANAGE dissector for Wireshark and tshark (Lua 5.2, Wireshark 4.0+).
--
-- The protocol between fogbank gateways' SDVSs and the SD-IoT controller
-- (docs/smanage.md). Decodes UDP ports 7601 (controller) and 7602
-- (gateways), and any other UDP datagram whose length byte is its length
-- and whose type is S-MANAGE's (a heuristic: gateways often use other
-- ports).
--
--   wireshark -X lua_script:deploy/wireshark/smanage.lua capture.pcap
--   tshark -r capture.pcap -X lua_script:deploy/wireshark/smanage.lua -V
--
-- or copy it into ~/.local/lib/wireshark/plugins/.

local smanage = Proto("smanage", "S-MANAGE")

local TYPES = {
  [0x01] = "Hello", [0x02] = "Report", [0x03] = "Request", [0x04] = "Response",
  [0x10] = "SetForwardingInstruction", [0x11] = "SetConfiguringInstruction",
  [0x12] = "ModifyConfiguration", [0x13] = "RequestFwdStats",
  [0x14] = "RequestConfigStats", [0x15] = "ResponseFwdStats",
  [0x16] = "ResponseConfigStats", [0x17] = "RequestFeatures",
  [0x18] = "ResponseFeatures",
}
local REPORTS = {
  [0x01] = "ReportFeatures", [0x02] = "ReportConfigurationRemove",
  [0x03] = "ReportLowBatt", [0x04] = "ReportFullTask", [0x05] = "ReportCompletion",
}
local FIELDS = { [0] = "source", [1] = "destination", [2] = "next hop", [3] = "type",
  [4] = "length", [5] = "TTL", [6] = "message id" }
local OPERATORS = { [0] = "=", [1] = "!=", [2] = ">", [3] = ">=", [4] = "<", [5] = "<=" }
local FORWARD_ACTIONS = { [0] = "forward unicast", [1] = "forward multicast",
  [2] = "forward broadcast", [3] = "drop", [4] = "modify", [5] = "continue" }
local CONFIG_ACTIONS = { [0] = "read", [1] = "switch on", [2] = "switch off", [3] = "set" }
local STATUS = { [0] = "off", [1] = "on" }

local f = smanage.fields
f.source = ProtoField.uint16("smanage.source", "Source address", base.HEX)
f.destination = ProtoField.uint16("smanage.destination", "Destination address", base.HEX)
f.next_hop = ProtoField.uint16("smanage.next_hop", "Next-hop address", base.HEX)
f.type = ProtoField.uint8("smanage.type", "Type", base.HEX, TYPES)
f.length = ProtoField.uint8("smanage.length", "Packet length", base.DEC)
f.ttl = ProtoField.uint8("smanage.ttl", "TTL", base.DEC)
f.message_id = ProtoField.uint8("smanage.message_id", "Message id", base.DEC)
f.state = ProtoField.uint8("smanage.state", "State (busy level)", base.DEC)
f.battery = ProtoField.uint8("smanage.battery", "Battery %", base.DEC, { [255] = "mains" })
f.report = ProtoField.uint8("smanage.report", "Report kind", base.HEX, REPORTS)
f.request_id = ProtoField.uint16("smanage.request_id", "Request id", base.DEC)
f.service = ProtoField.uint8("smanage.service", "Sensor service", base.DEC)
f.time = ProtoField.absolute_time("smanage.time", "Time", base.UTC)
f.value = ProtoField.int32("smanage.value", "Value", base.DEC)
f.exponent = ProtoField.int8("smanage.exponent", "Decimal exponent", base.DEC)
f.reading = ProtoField.string("smanage.reading", "Reading")
f.window = ProtoField.uint8("smanage.window", "Matching window", base.DEC)
f.field = ProtoField.uint8("smanage.field", "Matched field", base.DEC, FIELDS)
f.operator = ProtoField.uint8("smanage.operator", "Operator", base.DEC, OPERATORS)
f.match_value = ProtoField.uint16("smanage.match_value", "Value", base.HEX_DEC)
f.forward_action = ProtoField.uint8("smanage.forward_action", "Action", base.DEC, FORWARD_ACTIONS)
f.value1 = ProtoField.uint16("smanage.value1", "Value 1", base.HEX_DEC)
f.value2 = ProtoField.uint16("smanage.value2", "Value 2", base.HEX_DEC)
f.entry_ttl = ProtoField.uint16("smanage.entry_ttl", "TTL (s)", base.DEC)
f.frequency = ProtoField.uint16("smanage.frequency", "Frequency (s)", base.DEC)
f.period = ProtoField.uint16("smanage.period", "Period (s)", base.DEC)
f.config_destination = ProtoField.uint16("smanage.config_destination", "Destination", base.HEX)
f.config_action = ProtoField.uint8("smanage.config_action", "Action", base.DEC, CONFIG_ACTIONS)
f.set_value = ProtoField.int16("smanage.set_value", "Set value", base.DEC)
f.index = ProtoField.uint8("smanage.index", "Entry index", base.DEC, { [255] = "all" })
f.ttl_left = ProtoField.uint16("smanage.ttl_left", "TTL left (s)", base.DEC)
f.counter = ProtoField.uint32("smanage.counter", "Counter", base.DEC)
f.start_time = ProtoField.absolute_time("smanage.start_time", "Start time", base.UTC)
f.running_time = ProtoField.uint32("smanage.running_time", "Running time (s)", base.DEC)
f.executed = ProtoField.string("smanage.executed", "Executed")
f.location = ProtoField.string("smanage.location", "Location")
f.count = ProtoField.uint8("smanage.count", "Sensor services", base.DEC)
f.status = ProtoField.uint8("smanage.status", "Status", base.DEC, STATUS)
f.service_type = ProtoField.string("smanage.service_type", "Type")
f.driver = ProtoField.string("smanage.driver", "Driver")
f.data = ProtoField.bytes("smanage.data", "Application data")

local e_malformed = ProtoExpert.new("smanage.malformed", "Malformed S-MANAGE packet",
  expert.group.MALFORMED, expert.severity.ERROR)
smanage.experts = { e_malformed }

local function malformed(tree, tvb, why)
  tree:add_proto_expert_info(e_malformed, why)
end

local function features(tvb, offset, tree)
  local len = tvb:len()
  if offset >= len then return malformed(tree, tvb, "features cut short") end
  local loc_len = tvb(offset, 1):uint()
  if offset + 1 + loc_len > len then return malformed(tree, tvb, "location cut short") end
  tree:add(f.location, tvb(offset + 1, loc_len))
  offset = offset + 1 + loc_len
  if offset >= len then return malformed(tree, tvb, "service count missing") end
  local count = tvb(offset, 1):uint()
  tree:add(f.count, tvb(offset, 1))
  offset = offset + 1
  for _ = 1, count do
    if offset + 3 > len then return malformed(tree, tvb, "sensor service cut short") end
    local type_len = tvb(offset + 2, 1):uint()
    if offset + 3 + type_len + 1 > len then return malformed(tree, tvb, "type cut short") end
    local driver_len = tvb(offset + 3 + type_len, 1):uint()
    local entry_len = 4 + type_len + driver_len
    if offset + entry_len > len then return malformed(tree, tvb, "driver cut short") end
    local service = tree:add(smanage, tvb(offset, entry_len),
      string.format("Sensor service %d: %s (%s), %s", tvb(offset, 1):uint(),
        tvb(offset + 3, type_len):string(), tvb(offset + 4 + type_len, driver_len):string(),
        STATUS[tvb(offset + 1, 1):uint()] or "?"))
    service:add(f.service, tvb(offset, 1))
    service:add(f.status, tvb(offset + 1, 1))
    service:add(f.service_type, tvb(offset + 3, type_len))
    service:add(f.driver, tvb(offset + 4 + type_len, driver_len))
    offset = offset + entry_len
  end
  if offset ~= len then malformed(tree, tvb, "bytes after the last sensor service") end
end

local function forwarding_entry(tvb, o, tree)
  local entry = tree:add(smanage, tvb(o, 12), "Forwarding entry")
  entry:add(f.window, tvb(o, 1))
  entry:add(f.field, tvb(o + 1, 1))
  entry:add(f.operator, tvb(o + 2, 1))
  entry:add(f.match_value, tvb(o + 3, 2))
  entry:add(f.forward_action, tvb(o + 5, 1))
  entry:add(f.value1, tvb(o + 6, 2))
  entry:add(f.value2, tvb(o + 8, 2))
  entry:add(f.entry_ttl, tvb(o + 10, 2))
  entry:append_text(string.format(": window %d, %s %s 0x%04x → %s", tvb(o, 1):uint(),
    FIELDS[tvb(o + 1, 1):uint()] or "?", OPERATORS[tvb(o + 2, 1):uint()] or "?",
    tvb(o + 3, 2):uint(), FORWARD_ACTIONS[tvb(o + 5, 1):uint()] or "?"))
end

local function configuring_entry(tvb, o, tree)
  local entry = tree:add(smanage, tvb(o, 14), "Configuring entry")
  entry:add(f.request_id, tvb(o, 2))
  entry:add(f.service, tvb(o + 2, 1))
  entry:add(f.frequency, tvb(o + 3, 2))
  entry:add(f.period, tvb(o + 5, 2))
  entry:add(f.config_destination, tvb(o + 7, 2))
  entry:add(f.config_action, tvb(o + 9, 1))
  entry:add(f.set_value, tvb(o + 10, 2))
  entry:add(f.entry_ttl, tvb(o + 12, 2))
  entry:append_text(string.format(": request %d, service %d, %s every %d s for %d s",
    tvb(o, 2):uint(), tvb(o + 2, 1):uint(), CONFIG_ACTIONS[tvb(o + 9, 1):uint()] or "?",
    tvb(o + 3, 2):uint(), tvb(o + 5, 2):uint()))
end

local dissect

local function body(tvb, kind, tree, pinfo)
  local len = tvb:len() - 10
  local o = 10
  local function need(n)
    if len ~= n then malformed(tree, tvb, string.format("%s needs %d body bytes, has %d",
      TYPES[kind], n, len)) return false end
    return true
  end
  if kind == 0x01 then
    if len == 2 then
      tree:add(f.state, tvb(o, 1))
      tree:add(f.battery, tvb(o + 1, 1))
    elseif len ~= 0 then need(2) end
  elseif kind == 0x02 then
    if len < 1 then return malformed(tree, tvb, "report kind missing") end
    local report = tvb(o, 1):uint()
    tree:add(f.report, tvb(o, 1))
    pinfo.cols.info:append(" " .. (REPORTS[report] or "?"))
    local r = o + 1
    if report == 0x01 then features(tvb, r, tree)
    elseif report == 0x02 and len == 4 then
      tree:add(f.request_id, tvb(r, 2)); tree:add(f.service, tvb(r + 2, 1))
    elseif report == 0x03 and len == 2 then tree:add(f.battery, tvb(r, 1))
    elseif report == 0x04 and len == 2 then tree:add(f.state, tvb(r, 1))
    elseif report == 0x05 and len == 3 then tree:add(f.request_id, tvb(r, 2))
    else malformed(tree, tvb, "a report body that does not fit its kind") end
  elseif kind == 0x03 then
    if len < 10 then return malformed(tree, tvb, "the wrapped packet is shorter than a header") end
    local inner = tree:add(smanage, tvb(o, len), "Packet that matched no forwarding entry")
    dissect(tvb(o, len):tvb(), pinfo, inner, true)
  elseif kind == 0x04 then
    if not need(12) then return end
    tree:add(f.request_id, tvb(o, 2))
    tree:add(f.service, tvb(o + 2, 1))
    tree:add(f.time, tvb(o + 3, 4))
    tree:add(f.value, tvb(o + 7, 4))
    tree:add(f.exponent, tvb(o + 11, 1))
    local reading = tvb(o + 7, 4):int() * 10 ^ tvb(o + 11, 1):int()
    tree:add(f.reading, tvb(o + 7, 5), string.format("%g", reading))
    pinfo.cols.info:append(string.format(" request %d service %d = %g",
      tvb(o, 2):uint(), tvb(o + 2, 1):uint(), reading))
  elseif kind == 0x10 then
    if need(12) then forwarding_entry(tvb, o, tree) end
  elseif kind == 0x11 or kind == 0x12 then
    if need(14) then configuring_entry(tvb, o, tree) end
  elseif kind == 0x13 then
    if need(1) then tree:add(f.index, tvb(o, 1)) end
  elseif kind == 0x14 then
    if need(2) then tree:add(f.request_id, tvb(o, 2)) end
  elseif kind == 0x15 then
    if len % 7 ~= 0 then return malformed(tree, tvb, "not a whole number of 7-byte entries") end
    for e = o, o + len - 1, 7 do
      local stat = tree:add(smanage, tvb(e, 7), string.format("Forwarding entry %d", tvb(e, 1):uint()))
      stat:add(f.index, tvb(e, 1)); stat:add(f.ttl_left, tvb(e + 1, 2)); stat:add(f.counter, tvb(e + 3, 4))
    end
  elseif kind == 0x16 then
    if len % 18 ~= 0 then return malformed(tree, tvb, "not a whole number of 18-byte entries") end
    for e = o, o + len - 1, 18 do
      local stat = tree:add(smanage, tvb(e, 18), string.format("Configuring entry: request %d, service %d",
        tvb(e, 2):uint(), tvb(e + 2, 1):uint()))
      stat:add(f.request_id, tvb(e, 2)); stat:add(f.service, tvb(e + 2, 1))
      stat:add(f.ttl_left, tvb(e + 3, 2)); stat:add(f.counter, tvb(e + 5, 4))
      stat:add(f.start_time, tvb(e + 9, 4)); stat:add(f.running_time, tvb(e + 13, 4))
      stat:add(f.executed, tvb(e + 17, 1))
    end
  elseif kind == 0x17 then
    need(0)
  elseif kind == 0x18 then
    features(tvb, o, tree)
  elseif len > 0 then
    tree:add(f.data, tvb(o, len))
  end
end

function dissect(tvb, pinfo, tree, inner)
  local len = tvb:len()
  if len < 10 then
    malformed(tree, tvb, "shorter than the 10-byte header")
    return
  end
  local kind = tvb(6, 1):uint()
  local subtree = inner and tree or tree:add(smanage, tvb(), "S-MANAGE")
  subtree:add(f.source, tvb(0, 2))
  subtree:add(f.destination, tvb(2, 2))
  subtree:add(f.next_hop, tvb(4, 2))
  local type_item = subtree:add(f.type, tvb(6, 1))
  if not TYPES[kind] then type_item:append_text(" (application data)") end
  local length = subtree:add(f.length, tvb(7, 1))
  if tvb(7, 1):uint() ~= len then
    length:append_text(string.format(" (datagram has %d)", len))
    malformed(subtree, tvb, "length byte is not the datagram's length")
  end
  subtree:add(f.ttl, tvb(8, 1))
  subtree:add(f.message_id, tvb(9, 1))
  if not inner then
    pinfo.cols.protocol = "S-MANAGE"
    pinfo.cols.info = string.format("%s 0x%04x → 0x%04x", TYPES[kind] or string.format("Data 0x%02x", kind),
      tvb(0, 2):uint(), tvb(2, 2):uint())
    subtree:append_text(", " .. (TYPES[kind] or "Data"))
  end
  body(tvb, kind, subtree, pinfo)
end

function smanage.dissector(tvb, pinfo, tree)
  dissect(tvb, pinfo, tree, false)
  return tvb:len()
end

local function heuristic(tvb, pinfo, tree)
  if tvb:len() < 10 or tvb(7, 1):uint() ~= tvb:len() or not TYPES[tvb(6, 1):uint()] then
    return false
  end
  smanage.dissector(tvb, pinfo, tree)
  pinfo.conversation = smanage
  return true
end

local udp = DissectorTable.get("udp.port")
udp:add(7601, smanage)
udp:add(7602, smanage)
smanage:register_heuristic("udp", heuristic)
