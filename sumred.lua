function reduce(keys, values, rereduce)
  local t = 0
  for _, v in ipairs(values) do t = t + (type(v)=="number" and v or 0) end
  return t
end
