package main

// Argo CD v3.5.1 runs an argocd-cm `resource.customizations.health.<group>_<kind>`
// script in util/lua (VM.runLuaWithResourceActionParameters, ExecuteHealthLua)
// and gitops-engine's health.GetResourceHealth turns an error into Unknown.
// Importing util/lua would pull Argo CD's whole API (and Kubernetes 1.36
// libraries, against the bed's 1.35), so this file does the same steps with
// the same libraries at the versions Argo CD v3.5.1 pins (gopher-lua v1.1.2,
// layeh.com/gopher-json):
//
//  1. lua.NewState with SkipOpenLibs = !useOpenLibs: without useOpenLibs
//     (the default for argocd-cm scripts) no `string`, `math`, `io`, ...;
//  2. then, always: package, base, table, and Argo's "safe" os (time and
//     date only), also preloaded for require("os");
//  3. a one-second context; the globals actionParams (empty for health) and
//     obj (decoded as Argo's decodeValue does: numbers as LNumber, nil as nil);
//  4. DoString(script); the value on top of the stack, a table, is encoded
//     with gopher-json and read as {status, message}; an unknown status code
//     becomes Unknown "Lua returned an invalid health status"; nil is an
//     empty status; any error is Unknown with the error as message.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	luajson "layeh.com/gopher-json"
)

var validHealth = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true,
	"Degraded": true, "Missing": true,
}

func argoHealth(obj *unstructured.Unstructured, script string, useOpenLibs bool) verdict {
	if obj.GetDeletionTimestamp() != nil {
		// gitops-engine answers before any script for an object being deleted.
		return verdict{Status: "Progressing", Message: "Pending deletion"}
	}
	v, err := executeHealthLua(obj, script, useOpenLibs)
	if err != nil {
		return verdict{Status: "Unknown", Message: err.Error(), Error: err.Error()}
	}
	return v
}

func executeHealthLua(obj *unstructured.Unstructured, script string, useOpenLibs bool) (verdict, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !useOpenLibs})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true},
			lua.LString(lib.name)); err != nil {
			return verdict{}, err
		}
	}
	l.PreloadModule(lua.OsLibName, safeOsLoader)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("actionParams", l.CreateTable(0, 0))
	l.SetGlobal("obj", decodeValue(l, obj.Object))
	if err := l.DoString(script); err != nil {
		var apiErr *lua.ApiError
		if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorRun {
			apiErr.StackTrace = ""
			err = apiErr
		}
		return verdict{}, err
	}
	ret := l.Get(-1)
	switch ret.Type() {
	case lua.LTNil:
		return verdict{}, nil
	case lua.LTTable:
	default:
		return verdict{}, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	encoded, err := luajson.Encode(ret)
	if err != nil {
		return verdict{}, err
	}
	var hs struct {
		Status  string `json:"status"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(encoded, &hs); err != nil {
		return verdict{}, err
	}
	if !validHealth[hs.Status] {
		return verdict{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return verdict{Status: hs.Status, Message: hs.Message}, nil
}

// decodeValue converts an unstructured value as Argo CD does (json.Number as
// a string, integers and floats as numbers, anything else nil).
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case []any:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

// The safe os subset: time() and date() only, as Argo CD exposes them.
var safeOsFuncs = map[string]lua.LGFunction{"time": osTime, "date": osDate}

func openSafeOs(l *lua.LState) int {
	l.Push(l.RegisterModule(lua.OsLibName, safeOsFuncs))
	return 1
}

func safeOsLoader(l *lua.LState) int {
	l.Push(l.SetFuncs(l.NewTable(), safeOsFuncs))
	return 1
}

func osTime(l *lua.LState) int {
	if l.GetTop() == 0 {
		l.Push(lua.LNumber(time.Now().Unix()))
		return 1
	}
	tbl := l.CheckTable(1)
	field := func(key string, def int) int {
		if n, ok := tbl.RawGetString(key).(lua.LNumber); ok {
			return int(n)
		}
		return def
	}
	t := time.Date(field("year", -1), time.Month(field("month", -1)), field("day", -1),
		field("hour", 12), field("min", 0), field("sec", 0), 0, time.Local)
	l.Push(lua.LNumber(t.Unix()))
	return 1
}

// osDate supports what a health script may need: os.date("!%Y-%m-%dT%H:%M:%SZ"[, t]).
func osDate(l *lua.LState) int {
	t := time.Now()
	format := "%c"
	if l.GetTop() >= 1 {
		format = l.CheckString(1)
		if len(format) > 0 && format[0] == '!' {
			t, format = t.UTC(), format[1:]
		}
		if l.GetTop() >= 2 {
			t = time.Unix(l.CheckInt64(2), 0).UTC()
		}
	}
	l.Push(lua.LString(strftime(t, format)))
	return 1
}

var strftimeLayouts = map[byte]string{
	'a': "Mon", 'A': "Monday", 'b': "Jan", 'B': "January", 'c': "02 Jan 06 15:04 MST", 'd': "02",
	'F': "2006-01-02", 'H': "15", 'I': "03", 'm': "01", 'M': "04", 'p': "PM", 'S': "05",
	'y': "06", 'Y': "2006", 'z': "-0700", 'Z': "MST", 'X': "15:04:05",
}

func strftime(t time.Time, format string) string {
	out := make([]byte, 0, len(format)+16)
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i == len(format)-1 {
			out = append(out, c)
			continue
		}
		i++
		if layout, ok := strftimeLayouts[format[i]]; ok {
			out = append(out, t.Format(layout)...)
		} else {
			out = append(out, '%', format[i])
		}
	}
	return string(out)
}
