package main

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// message is a protobuf message under construction.
type message []byte

func (m message) bytes(field protowire.Number, v []byte) message {
	m = protowire.AppendTag(m, field, protowire.BytesType)
	return protowire.AppendBytes(m, v)
}

func (m message) varint(field protowire.Number, v uint64) message {
	m = protowire.AppendTag(m, field, protowire.VarintType)
	return protowire.AppendVarint(m, v)
}

// fields holds the length-delimited fields of a response, by number, in order.
type fields map[protowire.Number][][]byte

func (f fields) get(n protowire.Number) []byte {
	if v := f[n]; len(v) > 0 {
		return v[len(v)-1]
	}
	return nil
}

func parse(b []byte) (fields, error) {
	out := fields{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("bad tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, fmt.Errorf("bad field %d: %w", num, protowire.ParseError(m))
			}
			out[num] = append(out[num], append([]byte(nil), v...))
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return nil, fmt.Errorf("bad field %d: %w", num, protowire.ParseError(m))
		}
		b = b[m:]
	}
	return out, nil
}

// rawCodec sends and receives already-encoded message bytes.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*p = append((*p)[:0], data...)
	return nil
}
